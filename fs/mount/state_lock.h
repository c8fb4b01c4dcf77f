// One daemon per state directory and per backing directory. Two daemons appending to one log
// overwrite each other's records, and two daemons applying into one backing directory break
// each other's isolation, so a daemon holds, for as long as it runs:
//  - an OFD write lock on the file `lock` in each state directory it uses, with its pid written
//    into the file (an OFD lock does not tell its holder's pid; the file does);
//  - a flock on each backing directory it serves (a directory cannot be opened for writing, which
//    an OFD write lock would need), whose holder /proc/locks tells.
// Both are released by the kernel when the daemon's last descriptor goes, so a daemon that was
// killed never blocks its successor. The descriptors are close-on-exec.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "log/status.h"

namespace ktmfs::fs {

inline constexpr char kStateLockFileName[] = "lock";

// An exclusive lock held until destroyed (or until the process ends).
class DirLock {
 public:
  DirLock() = default;
  DirLock(DirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DirLock& operator=(DirLock&& other) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();

  // Locks DIR/lock (created 0600 if missing) without waiting and writes the caller's pid into
  // it. EBUSY, naming DIR and the holder's pid, if another process holds it.
  // `mountpoint`, if given, is written on the line after the pid: a daemon that finds the lock
  // held can tell a holder still serving its mount from one on its way out after an unmount.
  static Result<DirLock> LockStateDir(const std::string& dir, const std::string& mountpoint = {});
  // Locks the backing directory DIR itself without waiting. EBUSY, naming DIR and the holder's
  // pid if /proc/locks tells it, if another process holds it.
  static Result<DirLock> LockSource(const std::string& dir);

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Whether a process holds the lock of the state directory DIR now, without disturbing it: the
// pid written in DIR/lock (0 if unreadable), or nullopt if nobody holds it (or DIR has no lock
// file, as a log that was never mounted).
std::optional<pid_t> StateDirLockHolder(const std::string& dir);
// The mountpoint the holder of DIR's lock wrote (LockStateDir), if it wrote one.
std::optional<std::string> StateDirLockMountpoint(const std::string& dir);

// Takes every lock a mount needs: the state directories, then the backing directories. The
// first that is held elsewhere stops it; the locks taken until then are released.
Result<std::vector<DirLock>> LockMount(const std::vector<std::string>& state_dirs,
                                       const std::vector<std::string>& sources,
                                       const std::string& mountpoint = {});

}  // namespace ktmfs::fs

// The mount's own state as the kernel keeps it: read-only or not, and `-o remount`.
//
// mount(8) runs the filesystem's helper for `mount -o remount,ro DIR` too, so `ktmfs SOURCE
// DIR -o remount,...` must not start a second daemon: it asks the kernel to remount DIR (a
// live ktmfs mount) read-only or read-write and exits. The running daemon is not involved: the
// kernel makes every write through a read-only mount fail with EROFS before the daemon hears of
// it. What it does hear of is commit, an ioctl or xattr that a read-only mount lets through; it
// asks a ReadOnlyWatch first, which reads /proc/self/mountinfo (statvfs of its own mount would be
// a request to itself).
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "log/status.h"

namespace ktmfs::fs {

// Whether the ktmfs mount at `mountpoint` (absolute) is read-only: its mount or its superblock
// (Get; NotFound if no FUSE filesystem is mounted there). The answer is kept until the mount
// table changes, and for at most a second. Generating /proc/self/mountinfo costs the kernel a path
// walk per mount: about a tenth of the daemon's CPU in a loop of small commits. The kernel marks an
// open mountinfo with POLLPRI whenever this namespace's table changes (a mount, an unmount, any
// remount done here), so Get reads it again then. A superblock made read-only with no event here (a
// remount in another mount namespace that holds a copy of the mount, an emergency remount,
// fsconfig(FSCONFIG_CMD_RECONFIGURE)) is seen within the second. Safe for concurrent callers.
// The table is opened at the first Get, in the process that asks (the daemon, after it went to
// the background).
class ReadOnlyWatch {
 public:
  // `table`: the mountinfo file to watch (tests give another process's).
  explicit ReadOnlyWatch(std::string mountpoint, std::string table = "/proc/self/mountinfo");
  ~ReadOnlyWatch();
  ReadOnlyWatch(const ReadOnlyWatch&) = delete;
  ReadOnlyWatch& operator=(const ReadOnlyWatch&) = delete;

  Result<bool> Get();
  // How many times Get read the table (tests).
  uint64_t reads() const;

 private:
  const std::string mountpoint_;
  const std::string table_;
  mutable std::mutex mu_;
  int fd_ = -2;  // -2: not opened yet; -1: could not be opened, every Get reads the table afresh
  std::optional<Result<bool>> answer_;
  std::chrono::steady_clock::time_point read_at_;
  uint64_t reads_ = 0;
};

// Whether a ktmfs filesystem is mounted at `mountpoint` in this mount namespace.
bool KtmfsMountedAt(const std::string& mountpoint);

// Remounts the ktmfs mount at `mountpoint` read-only or read-write, keeping its other mount
// flags (nosuid, nodev, noexec, atime). Refused unless a fuse.ktmfs filesystem is mounted there;
// EBUSY from the kernel when going read-only while files are open for writing.
Status Remount(const std::string& mountpoint, bool read_only);

}  // namespace ktmfs::fs

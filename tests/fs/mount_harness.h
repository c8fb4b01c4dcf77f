// Test harness for real ktmfs mounts: temporary directories under /tmp, running commands,
// mounting the built daemon and unmounting it on every path (RAII), including failures.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace ktmfs::fs::testing {

// The daemon under test: $KTMFS_BIN (set by meson), else "ktmfs" from PATH.
std::string KtmfsBinary();

// A fresh directory under /tmp, removed recursively (after unmounting anything below it).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }
  // Creates and returns a subdirectory.
  std::string MakeDir(const std::string& name) const;

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;  // 128+signal when killed
  std::string output;  // stdout and stderr together
};

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env = {});

// Whether `path` is the root of a FUSE mount right now.
bool IsFuseMount(const std::string& path);
// The /proc/mounts line for mountpoint `path`, or "".
std::string ProcMountsLine(const std::string& path);
// Pids of ktmfs daemons whose command line names `mountpoint`.
std::vector<pid_t> DaemonsFor(const std::string& mountpoint);
// Waits (bounded) until no daemon serves `mountpoint`; returns whether none is left.
bool WaitNoDaemon(const std::string& mountpoint);
// fusermount3 -u, falling back to umount -l; returns whether the mount is gone.
bool Unmount(const std::string& mountpoint);

// A ktmfs daemon run in the foreground (-f) as a child of the test, so its exit status is
// observed: a clean unmount must end it with status 0 (and, built with ASan, no leak report).
class Mount {
 public:
  Mount() = default;
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  // Starts the daemon and waits until the mount is live; "" on success, else the reason.
  std::string Start(const std::string& source, const std::string& mountpoint,
                    const std::vector<std::string>& options = {});
  // Unmounts and reaps the daemon; "" on success (exit status 0), else the reason.
  std::string Stop();
  // Waits for the daemon to exit by itself and reaps it; "" if it exited with status 0.
  std::string WaitExit();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& mountpoint() const { return mountpoint_; }

 private:
  pid_t pid_ = -1;
  std::string mountpoint_;
  std::string log_path_;
};

// Runs `fn` in a child process with the given uid/gid (no supplementary groups) and umask;
// returns fn's result: 0, or an errno.
int AsUser(uid_t uid, gid_t gid, const std::function<int()>& fn, mode_t umask_value = 022);

// Runs `fn` in a child process with a private mount namespace in which /usr/local/sbin holds
// the ktmfs under test, so mount(8) finds it: mount(8) drops PATH from the environment before
// running mount.fuse3, whose shell then searches only the default directories. Returns fn's
// result ("" for success, else what failed).
std::string WithKtmfsInstalled(const std::function<std::string()>& fn);

// Reads a whole file ("" if it cannot be read).
std::string ReadFile(const std::string& path);
bool WriteFile(const std::string& path, const std::string& data);

}  // namespace ktmfs::fs::testing

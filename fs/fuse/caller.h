// The per-request caller context: who asked (uid, gid, pid) and, around operations whose
// effect depends on it, the daemon thread taking on the caller's filesystem identity.
//
// Why per thread: the daemon serves requests from many users on a pool of threads. The raw
// setfsuid/setfsgid/setgroups syscalls change only the calling thread's credentials (glibc's
// setgroups would change every thread's), so one request's identity never leaks into another.
// Changing the fsuid away from 0 also drops the filesystem capabilities, so the backing
// filesystem checks permissions exactly as it would for the caller; switching back restores them.
// CAP_SYS_RESOURCE goes too, so what the caller makes takes space as the caller's would
// (writer_identity.h).
//
// Creating as the caller includes the caller's umask. With POSIX ACLs the kernel leaves the
// umask to the filesystem (FUSE_CAP_DONT_MASK), because a parent's default ACL replaces it;
// the backing filesystem makes exactly that choice when the creating thread carries the
// caller's umask. Each daemon thread that creates therefore has its own umask
// (unshare(CLONE_FS)), set for the create and put back to 0 after.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <vector>

namespace ktmfs::fs {

struct CallerContext {
  uid_t uid;
  gid_t gid;
  pid_t pid;  // the calling thread; 0 when outside the daemon's pid namespace
  static CallerContext Of(fuse_req_t req);
};

// Who sent one request, as the operations need it. The adapter makes one per request (Of), on
// the request's thread; a test makes one outright. The supplementary groups are fetched from the
// kernel only when asked (fuse_req_getgroups reads /proc).
class Caller {
 public:
  static Caller Of(fuse_req_t req);
  // A caller with no request behind it (tests): its groups are `groups`.
  Caller(uid_t uid, gid_t gid, pid_t pid, std::vector<gid_t> groups, mode_t umask = 022);

  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  pid_t pid() const { return pid_; }  // 0 when outside the daemon's pid namespace
  mode_t umask() const { return umask_; }
  CallerContext context() const { return CallerContext{uid_, gid_, pid_}; }
  std::vector<gid_t> Groups() const;
  // The kernel marked the request as from a caller without CAP_FSETID, whatever /proc says
  // (fs/fuse/kernel_channel.h).
  bool kernel_denies_fsetid() const { return kernel_denies_fsetid_; }

 private:
  Caller() = default;
  fuse_req_t req_ = nullptr;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = 0;
  mode_t umask_ = 0;
  std::vector<gid_t> groups_;  // without a request
  bool kernel_denies_fsetid_ = false;
};

// What an operation needs from the caller's identity.
enum class IdentityUse {
  kCreates,  // creates an object: the caller must own it
  kChecks,   // only permission checks (needed when the kernel does none)
};

class IdentityScope {
 public:
  // `kernel_checks`: the mount has default_permissions, so the kernel already checked access.
  IdentityScope(const Caller& caller, IdentityUse use, bool kernel_checks);
  ~IdentityScope();
  IdentityScope(const IdentityScope&) = delete;
  IdentityScope& operator=(const IdentityScope&) = delete;

  // The mode to create with: `mode` as the caller asked, when the thread carries the caller's
  // umask; with the umask applied here when it cannot (no per-thread umask on this system).
  mode_t CreateMode(mode_t mode) const { return own_umask_ ? mode : mode & ~caller_umask_; }

  // Called once at start-up: remembers the daemon's own identity.
  static void InitProcessIdentity();

 private:
  bool switched_ = false;
  bool own_umask_ = false;   // the thread's umask is the caller's until the scope ends
  bool caps_saved_ = false;  // CAP_SYS_RESOURCE dropped while switched (writer_identity.h)
  unsigned saved_caps_[2] = {0, 0};
  mode_t caller_umask_ = 0;
};

}  // namespace ktmfs::fs

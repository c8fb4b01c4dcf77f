// The per-request caller context: who asked (uid, gid, pid) and, around operations whose
// effect depends on it, the daemon thread taking on the caller's filesystem identity.
//
// Why per thread: the daemon serves requests from many users on a pool of threads. The raw
// setfsuid/setfsgid/setgroups syscalls change only the calling thread's credentials (glibc's
// setgroups would change every thread's), so one request's identity never leaks into another.
// Changing the fsuid away from 0 also drops the filesystem capabilities, so the backing
// filesystem checks permissions exactly as it would for the caller; switching back restores them.
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

// What an operation needs from the caller's identity.
enum class IdentityUse {
  kCreates,  // creates an object: the caller must own it
  kChecks,   // only permission checks (needed when the kernel does none)
};

class IdentityScope {
 public:
  // `kernel_checks`: the mount has default_permissions, so the kernel already checked access.
  IdentityScope(fuse_req_t req, IdentityUse use, bool kernel_checks);
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
  bool own_umask_ = false;  // the thread's umask is the caller's until the scope ends
  mode_t caller_umask_ = 0;
};

}  // namespace ktmfs::fs

#include "fs/fuse/caller.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "fs/fuse/kernel_channel.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs {
namespace {

uid_t g_daemon_uid = 0;
gid_t g_daemon_gid = 0;
std::vector<gid_t> g_daemon_groups;
bool g_can_switch = false;

void SetThreadGroups(const std::vector<gid_t>& groups) {
  syscall(SYS_setgroups, groups.size(), groups.empty() ? nullptr : groups.data());
}

// Gives this thread a umask of its own, if it shares one. Asked before every create, not once
// per thread: a thread libfuse starts from a worker shares that worker's umask until it asks,
// and the kernel makes the call cheap when nothing is shared. A failure (a seccomp filter,
// say) leaves the umask alone, and creates apply it to the mode themselves.
bool ThreadOwnsUmask() {
  return unshare(CLONE_FS) == 0;
}

}  // namespace

Caller Caller::Of(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  Caller caller;
  caller.req_ = req;
  caller.uid_ = c->uid;
  caller.gid_ = c->gid;
  caller.pid_ = c->pid;
  caller.umask_ = c->umask & 0777;
  caller.kernel_denies_fsetid_ = KernelChannel::CurrentRequestKillsSuidgid();
  return caller;
}

Caller::Caller(uid_t uid, gid_t gid, pid_t pid, std::vector<gid_t> groups, mode_t umask)
    : uid_(uid), gid_(gid), pid_(pid), umask_(umask & 0777), groups_(std::move(groups)) {}

std::vector<gid_t> Caller::Groups() const {
  if (req_ == nullptr) return groups_;
  std::vector<gid_t> g(64);
  int n = fuse_req_getgroups(req_, static_cast<int>(g.size()), g.data());
  if (n > static_cast<int>(g.size())) {
    g.resize(static_cast<size_t>(n));
    n = fuse_req_getgroups(req_, n, g.data());
  }
  g.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return g;
}

CallerContext CallerContext::Of(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return CallerContext{c->uid, c->gid, c->pid};
}

void IdentityScope::InitProcessIdentity() {
  g_daemon_uid = geteuid();
  g_daemon_gid = getegid();
  int n = getgroups(0, nullptr);
  if (n > 0) {
    g_daemon_groups.resize(n);
    n = getgroups(n, g_daemon_groups.data());
    g_daemon_groups.resize(n > 0 ? n : 0);
  }
  g_can_switch = g_daemon_uid == 0;
}

IdentityScope::IdentityScope(const Caller& caller, IdentityUse use, bool kernel_checks) {
  if (use == IdentityUse::kCreates) {
    caller_umask_ = caller.umask();
    if (ThreadOwnsUmask()) {
      umask(caller_umask_);
      own_umask_ = true;
    }
  }
  if (!g_can_switch) return;
  if (use == IdentityUse::kChecks && kernel_checks) return;
  if (caller.uid() == g_daemon_uid && caller.gid() == g_daemon_gid) return;
  // Supplementary groups matter for group-writable directories; without the caller's pid
  // (another pid namespace) only the primary group is known.
  SetThreadGroups(caller.Groups());
  // What the caller makes takes space as the caller's would (writer_identity.h): saved before
  // setfsuid drops the filesystem capabilities, which the restore raises again.
  caps_saved_ = fstx::DropSysResource(saved_caps_);
  syscall(SYS_setfsgid, caller.gid());
  syscall(SYS_setfsuid, caller.uid());
  switched_ = true;
}

IdentityScope::~IdentityScope() {
  // The daemon's own files (logs, staging) are made with exactly the modes it asks for.
  if (own_umask_) umask(0);
  if (!switched_) return;
  syscall(SYS_setfsuid, g_daemon_uid);
  syscall(SYS_setfsgid, g_daemon_gid);
  SetThreadGroups(g_daemon_groups);
  if (caps_saved_) fstx::RestoreEffectiveCaps(saved_caps_);
}

}  // namespace ktmfs::fs

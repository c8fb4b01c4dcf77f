#include "fs/tx/writer_identity.h"

#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cassert>

namespace ktmfs::fstx {
namespace {

bool GetCaps(__user_cap_data_struct data[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capget, &header, data) == 0;
}

bool SetEffective(const unsigned effective[2]) {
  __user_cap_data_struct data[2];
  if (!GetCaps(data)) return false;
  data[0].effective = effective[0];
  data[1].effective = effective[1];
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capset, &header, data) == 0;
}

bool DaemonIsRoot() {
  static const bool root = geteuid() == 0;
  return root;
}

}  // namespace

WriterIds OwnerOf(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return {0, 0};
  return {st.st_uid, st.st_gid};
}

bool DropSysResource(unsigned effective[2]) {
  __user_cap_data_struct data[2];
  if (!GetCaps(data)) return false;
  effective[0] = data[0].effective;
  effective[1] = data[1].effective;
  static_assert(CAP_SYS_RESOURCE < 32);
  const unsigned without[2] = {effective[0] & ~(1u << CAP_SYS_RESOURCE), effective[1]};
  return SetEffective(without);
}

void RestoreEffectiveCaps(const unsigned effective[2]) {
  [[maybe_unused]] const bool ok = SetEffective(effective);
  // Raising what the permitted set holds cannot fail; a thread left without its capabilities
  // would serve the next request wrongly.
  assert(ok);
}

bool WriterIdentity::Switches(uid_t uid) {
  // -1: no ids to take on.
  return uid != 0 && uid != static_cast<uid_t>(-1) && DaemonIsRoot();
}

WriterIdentity::WriterIdentity(uid_t uid, gid_t gid) {
  if (!Switches(uid)) return;
  __user_cap_data_struct caps[2];
  if (!GetCaps(caps)) return;
  old_effective_[0] = caps[0].effective;
  old_effective_[1] = caps[1].effective;
  const long groups = syscall(SYS_getgroups, 0, nullptr);
  if (groups < 0) return;
  old_groups_.resize(static_cast<size_t>(groups));
  if (groups > 0 && syscall(SYS_getgroups, groups, old_groups_.data()) != groups) return;
  // The raw syscall: glibc's setgroups would change every thread's.
  if (groups > 0 && syscall(SYS_setgroups, 0, nullptr) != 0) return;
  // setfsuid returns the previous value whatever it does. Leaving 0 drops the filesystem
  // capabilities (CAP_DAC_OVERRIDE, CAP_FSETID, ...) from the effective set: raised again below,
  // so that only the space rules change.
  old_fsgid_ = static_cast<gid_t>(syscall(SYS_setfsgid, gid));
  old_fsuid_ = static_cast<uid_t>(syscall(SYS_setfsuid, uid));
  const unsigned without[2] = {old_effective_[0] & ~(1u << CAP_SYS_RESOURCE), old_effective_[1]};
  [[maybe_unused]] const bool ok = SetEffective(without);
  assert(ok);
  switched_ = true;
}

WriterIdentity::~WriterIdentity() {
  if (!switched_) return;
  syscall(SYS_setfsuid, old_fsuid_);
  syscall(SYS_setfsgid, old_fsgid_);
  if (!old_groups_.empty()) syscall(SYS_setgroups, old_groups_.size(), old_groups_.data());
  RestoreEffectiveCaps(old_effective_);
}

}  // namespace ktmfs::fstx

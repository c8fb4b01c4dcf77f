// Extended attributes, passed through to the backing object. Names under "user.ktmfs." belong
// to the control interface: they are never stored, never listed, and cannot be set as data.
// ACLs (system.posix_acl_*) pass through too: the backing filesystem keeps mode and ACL in step.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cstring>
#include <vector>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/adapter.h"
#include "fs/ops/control.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/posix_acl.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"

namespace ktmfs::fs {
namespace {

Reply Getxattr(fuse_req_t req, Filesystem& fs, Inode* inode, const char* name, size_t size) {
  // The kernel's question before every write(2): answered from the inode when the object is
  // known to have no capabilities (reading security.* needs no permission, so the answer is
  // the same for every caller), saving a walk through /proc per write. Not for version nodes:
  // once their transaction ended they share the object with its committed node, whose xattr
  // changes they would not see.
  const bool caps =
      inode->type == S_IFREG && !inode->is_tx_version() && std::strcmp(name, kCapabilityXattr) == 0;
  const uint64_t gen = caps ? inode->xattr_gen.load(std::memory_order_acquire) : 0;
  if (caps && inode->caps_absent_at.load(std::memory_order_acquire) == gen + 1)
    return Reply::Error(ENODATA);
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  NodeFd fd = inode->Fd();
  ProcPath path(fd.get());
  std::vector<char> buf(size);
  ssize_t n = getxattr(path.c_str(), name, size == 0 ? nullptr : buf.data(), size);
  if (n < 0) {
    if (caps && errno == ENODATA) inode->caps_absent_at.store(gen + 1, std::memory_order_release);
    return Reply::Error(XattrReadErrno(name, errno));
  }
  if (size == 0) return Reply::XattrSize(static_cast<size_t>(n));
  buf.resize(static_cast<size_t>(n));
  return Reply::Bytes(std::move(buf));
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (IsControlXattr(name)) {
    std::string value;
    int err = HandleControlGetxattr(fs, CallerContext::Of(req), inode, name, &value);
    Send(req, err != 0 ? Reply::Error(err) : Reply::XattrBytes(value, size));
    return;
  }
  if (inode->is_virtual_root()) {
    Send(req, Reply::Error(ENODATA));
    return;
  }
  Serve(
      req, inode, Access::kRead, [&] { return Getxattr(req, fs, inode, name, size); },
      [&](const TxGuard& tx) { return txops::Getxattr(fs, tx, inode, name, size); });
}

Reply Listxattr(fuse_req_t req, Filesystem& fs, Inode* inode, size_t size) {
  std::vector<char> names;
  if (!inode->is_virtual_root()) {
    IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
    NodeFd fd = inode->Fd();
    ProcPath path(fd.get());
    // The list is filtered, so its size is known only after reading it whole.
    while (true) {
      ssize_t n = listxattr(path.c_str(), nullptr, 0);
      if (n < 0) return Reply::Error(errno);
      names.resize(static_cast<size_t>(n));
      n = listxattr(path.c_str(), names.data(), names.size());
      if (n >= 0) {
        names.resize(static_cast<size_t>(n));
        break;
      }
      if (errno != ERANGE) return Reply::Error(errno);
    }
  }
  std::vector<char> shown;
  for (size_t i = 0; i < names.size();) {
    const char* name = names.data() + i;
    size_t len = strnlen(name, names.size() - i);
    if (!IsControlXattr(name)) shown.insert(shown.end(), name, name + len + 1);
    i += len + 1;
  }
  return Reply::XattrBytes(std::move(shown), size);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root()) {
    Send(req, Listxattr(req, fs, inode, size));
    return;
  }
  Serve(
      req, inode, Access::kRead, [&] { return Listxattr(req, fs, inode, size); },
      [&](const TxGuard& tx) { return txops::Listxattr(fs, tx, inode, size); });
}

// Setting an access ACL clears the set-group-ID bit unless the caller is in the file's group or
// has CAP_FSETID (posix_acl_update_mode). The backing filesystem applied that rule to the
// daemon, which has CAP_FSETID; libfuse 3.14 drops the kernel's FUSE_SETXATTR_ACL_KILL_SGID
// flag, so the rule is applied here for the caller.
int DropSetgidAfterAcl(fuse_req_t req, Inode* inode) {
  struct stat st;
  if (fstatat(inode->Fd().get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!(st.st_mode & S_ISGID)) return 0;
  const Requester who = txops::RequesterOf(Caller::Of(req));
  if (who.InGroup(st.st_gid) || who.Capable(CAP_FSETID)) return 0;
  return chmod(ProcPath(inode->Fd().get()).c_str(), st.st_mode & 07777 & ~S_ISGID) == 0 ? 0 : errno;
}

Reply Setxattr(fuse_req_t req, Filesystem& fs, Inode* inode, const char* name, const char* value,
               size_t size, int flags) {
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  inode->XattrsChanging();
  auto set = [&] {
    return setxattr(ProcPath(inode->Fd().get()).c_str(), name, value, size, flags) == 0 ? 0 : errno;
  };
  // Writes the kernel passes through would not clear a capability (fs/ops/passthrough.h).
  int err = std::strcmp(name, kCapabilityXattr) == 0
                ? fs.passthrough().WithoutWriters(fs, inode, set)
                : set();
  if (err == 0 && std::strcmp(name, kAclAccessXattr) == 0) err = DropSetgidAfterAcl(req, inode);
  inode->XattrsChanging();
  return Reply::Error(err);
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (IsControlXattr(name)) {
    Send(req, Reply::Error(HandleControlSetxattr(fs, CallerContext::Of(req), name, value, size)));
    return;
  }
  if (inode->is_virtual_root()) {
    Send(req, Reply::Error(EPERM));
    return;
  }
  Serve(
      req, inode, Access::kChange,
      [&] { return Setxattr(req, fs, inode, name, value, size, flags); },
      [&](const TxGuard& tx) {
        return txops::Setxattr(Caller::Of(req), fs, tx, inode, name, value, size, flags);
      });
}

Reply Removexattr(fuse_req_t req, Filesystem& fs, Inode* inode, const char* name) {
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  inode->XattrsChanging();
  int r = removexattr(ProcPath(inode->Fd().get()).c_str(), name);
  int err = r == 0 ? 0 : errno;
  inode->XattrsChanging();
  return Reply::Error(err);
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root() || IsControlXattr(name)) {
    Send(req, Reply::Error(inode->is_virtual_root() ? EPERM : ENODATA));
    return;
  }
  Serve(
      req, inode, Access::kChange, [&] { return Removexattr(req, fs, inode, name); },
      [&](const TxGuard& tx) { return txops::Removexattr(Caller::Of(req), fs, tx, inode, name); });
}

}  // namespace

void AddXattrOps(fuse_lowlevel_ops* ops) {
  ops->getxattr = OpGetxattr;
  ops->listxattr = OpListxattr;
  ops->setxattr = OpSetxattr;
  ops->removexattr = OpRemovexattr;
}

}  // namespace ktmfs::fs

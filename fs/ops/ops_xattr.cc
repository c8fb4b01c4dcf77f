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
#include "fs/ops/control.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/posix_acl.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"

namespace ktmfs::fs {
namespace {

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (IsControlXattr(name)) {
    std::string value;
    int err = HandleControlGetxattr(fs, CallerContext::Of(req), inode, name, &value);
    if (err == 0 && size != 0 && value.size() > size) err = ERANGE;
    if (err != 0) {
      fuse_reply_err(req, err);
    } else if (size == 0) {
      fuse_reply_xattr(req, value.size());
    } else {
      fuse_reply_buf(req, value.data(), value.size());
    }
    return;
  }
  if (inode->is_virtual_root()) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, ClassifyRead(fs, tx, inode),
             [&] { txops::Getxattr(req, fs, tx, inode, name, size); }))
    return;
  // The kernel's question before every write(2): answered from the inode when the object is
  // known to have no capabilities (reading security.* needs no permission, so the answer is
  // the same for every caller), saving a walk through /proc per write. Not for version nodes:
  // once their transaction ended they share the object with its committed node, whose xattr
  // changes they would not see.
  const bool caps =
      inode->type == S_IFREG && !inode->is_tx_version() && std::strcmp(name, kCapabilityXattr) == 0;
  const uint64_t gen = caps ? inode->xattr_gen.load(std::memory_order_acquire) : 0;
  if (caps && inode->caps_absent_at.load(std::memory_order_acquire) == gen + 1) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  NodeFd fd = inode->Fd();
  ProcPath path(fd.get());
  if (size == 0) {
    ssize_t n = getxattr(path.c_str(), name, nullptr, 0);
    if (n < 0) {
      if (caps && errno == ENODATA) inode->caps_absent_at.store(gen + 1, std::memory_order_release);
      fuse_reply_err(req, XattrReadErrno(name, errno));
    } else {
      fuse_reply_xattr(req, static_cast<size_t>(n));
    }
    return;
  }
  std::vector<char> buf(size);
  ssize_t n = getxattr(path.c_str(), name, buf.data(), size);
  if (n < 0) {
    if (caps && errno == ENODATA) inode->caps_absent_at.store(gen + 1, std::memory_order_release);
    fuse_reply_err(req, XattrReadErrno(name, errno));
  } else {
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  }
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (!inode->is_virtual_root()) {
    TxGuard tx = fs.EnterTx(req);
    if (Routed(req, ClassifyRead(fs, tx, inode),
               [&] { txops::Listxattr(req, fs, tx, inode, size); }))
      return;
  }
  std::vector<char> names;
  if (!inode->is_virtual_root()) {
    IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
    NodeFd fd = inode->Fd();
    ProcPath path(fd.get());
    // The list is filtered, so its size is known only after reading it whole.
    while (true) {
      ssize_t n = listxattr(path.c_str(), nullptr, 0);
      if (n < 0) {
        fuse_reply_err(req, errno);
        return;
      }
      names.resize(static_cast<size_t>(n));
      n = listxattr(path.c_str(), names.data(), names.size());
      if (n >= 0) {
        names.resize(static_cast<size_t>(n));
        break;
      }
      if (errno != ERANGE) {
        fuse_reply_err(req, errno);
        return;
      }
    }
  }
  std::vector<char> shown;
  for (size_t i = 0; i < names.size();) {
    const char* name = names.data() + i;
    size_t len = strnlen(name, names.size() - i);
    if (!IsControlXattr(name)) shown.insert(shown.end(), name, name + len + 1);
    i += len + 1;
  }
  ReplyXattrNames(req, shown, size);
}

// Setting an access ACL clears the set-group-ID bit unless the caller is in the file's group or
// has CAP_FSETID (posix_acl_update_mode). The backing filesystem applied that rule to the
// daemon, which has CAP_FSETID; libfuse 3.14 drops the kernel's FUSE_SETXATTR_ACL_KILL_SGID
// flag, so the rule is applied here for the caller.
int DropSetgidAfterAcl(fuse_req_t req, Inode* inode) {
  struct stat st;
  if (fstatat(inode->Fd().get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!(st.st_mode & S_ISGID)) return 0;
  const Requester who = txops::RequesterOf(req);
  if (who.InGroup(st.st_gid) || who.Capable(CAP_FSETID)) return 0;
  return chmod(ProcPath(inode->Fd().get()).c_str(), st.st_mode & 07777 & ~S_ISGID) == 0 ? 0 : errno;
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (IsControlXattr(name)) {
    fuse_reply_err(req, HandleControlSetxattr(fs, CallerContext::Of(req), name, value, size));
    return;
  }
  if (inode->is_virtual_root()) {
    fuse_reply_err(req, EPERM);
    return;
  }
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, Classify(fs, tx, inode),
             [&] { txops::Setxattr(req, fs, tx, inode, name, value, size, flags); }))
    return;
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
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
  fuse_reply_err(req, err);
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root() || IsControlXattr(name)) {
    fuse_reply_err(req, inode->is_virtual_root() ? EPERM : ENODATA);
    return;
  }
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, Classify(fs, tx, inode), [&] { txops::Removexattr(req, fs, tx, inode, name); }))
    return;
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  inode->XattrsChanging();
  int r = removexattr(ProcPath(inode->Fd().get()).c_str(), name);
  int err = r == 0 ? 0 : errno;
  inode->XattrsChanging();
  fuse_reply_err(req, err);
}

}  // namespace

void AddXattrOps(fuse_lowlevel_ops* ops) {
  ops->getxattr = OpGetxattr;
  ops->listxattr = OpListxattr;
  ops->setxattr = OpSetxattr;
  ops->removexattr = OpRemovexattr;
}

}  // namespace ktmfs::fs

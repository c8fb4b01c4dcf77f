// The committed view's extended attributes (committed_ops.h), passed through to the backing
// object as the caller. ACLs (system.posix_acl_*) pass through too: the backing filesystem keeps
// mode and ACL in step.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cstring>
#include <vector>

#include "fs/ops/committed_ops.h"
#include "fs/ops/control.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/posix_acl.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs::committed {
namespace {

// Setting an access ACL clears the set-group-ID bit unless the caller is in the file's group or
// has CAP_FSETID (posix_acl_update_mode). The backing filesystem applied that rule to the
// daemon, which has CAP_FSETID; libfuse 3.14 drops the kernel's FUSE_SETXATTR_ACL_KILL_SGID
// flag, so the rule is applied here for the caller.
int DropSetgidAfterAcl(const Caller& caller, Inode* inode) {
  struct stat st;
  if (fstatat(inode->Fd().get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!(st.st_mode & S_ISGID)) return 0;
  const Requester who = txops::RequesterOf(caller);
  if (who.InGroup(st.st_gid) || who.CapableOver(CAP_FSETID, st)) return 0;
  return chmod(ProcPath(inode->Fd().get()).c_str(), st.st_mode & 07777 & ~S_ISGID) == 0 ? 0 : errno;
}

}  // namespace

Reply Getxattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name, size_t size) {
  // The kernel's question before every write(2): answered from the inode when the object is
  // known to have no capabilities (reading security.* needs no permission, so the answer is
  // the same for every caller), saving a walk through /proc per write. Not for version nodes:
  // once their transaction ended they share the object with its committed node, whose xattr
  // changes they would not see.
  const bool caps =
      inode->type == S_IFREG && !inode->is_tx_version() && std::strcmp(name, kCapabilityXattr) == 0;
  const uint64_t gen = caps ? inode->xattr_gen.load(std::memory_order_acquire) : 0;
  // Not while an apply has anything closed: it may be changing this object's, or serving it.
  if (caps && inode->caps_absent_at.load(std::memory_order_acquire) == gen + 1 &&
      !(fs.txs() != nullptr && fs.txs()->gate().AnyClosed()))
    return Reply::Error(ENODATA);
  // A commit's apply may be setting the object's xattrs: read them before it or after, or as
  // it leaves them while it copies a big file's data (ServedFrom).
  auto visible = fs.ReadingCommittedOrServed(inode);
  if (const fstx::ServedObject* served = fs.ServedFrom(visible, inode)) {
    if (auto v = served->Xattr(name)) {
      if (!v->ok()) return Reply::Error(txops::Errno(v->status()));
      return Reply::XattrBytes(**v, size);
    }
  }
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
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

Reply Listxattr(const Caller& caller, Filesystem& fs, Inode* inode, size_t size) {
  std::vector<std::string> listed;
  fstx::VisibilityGate::Pass visible;
  if (!inode->is_virtual_root()) {
    visible = fs.ReadingCommittedOrServed(inode);
    IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
    NodeFd fd = inode->Fd();
    if (int err = txops::ShownXattrNames(ProcPath(fd.get()).c_str(), &listed); err != 0)
      return Reply::Error(err);
  }
  if (const fstx::ServedObject* served = fs.ServedFrom(visible, inode))
    listed = served->XattrNames(std::move(listed));
  return txops::XattrNamesReply(listed, size);
}

Reply Setxattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name,
               const char* value, size_t size, int flags) {
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
  // A value may need a block of its own: space as the caller's (writer_identity.h).
  fstx::WriterIdentity space(caller.uid(), caller.gid());
  inode->XattrsChanging();
  auto set = [&] {
    return setxattr(ProcPath(inode->Fd().get()).c_str(), name, value, size, flags) == 0 ? 0 : errno;
  };
  // Writes the kernel passes through would not clear a capability (fs/ops/passthrough.h).
  int err = std::strcmp(name, kCapabilityXattr) == 0
                ? fs.passthrough().WithoutWriters(fs, inode, set)
                : set();
  if (err == 0 && std::strcmp(name, kAclAccessXattr) == 0) err = DropSetgidAfterAcl(caller, inode);
  inode->XattrsChanging();
  return Reply::Error(err);
}

Reply Removexattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name) {
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
  inode->XattrsChanging();
  int r = removexattr(ProcPath(inode->Fd().get()).c_str(), name);
  int err = r == 0 ? 0 : errno;
  inode->XattrsChanging();
  return Reply::Error(err);
}

}  // namespace ktmfs::fs::committed

// Extended attribute requests, served through the adapter by committed_xattr.cc or
// tx_ops_xattr.cc. Names under "user.ktmfs." belong to the control interface: they are never
// stored, never listed, and cannot be set as data.
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
#include "fs/ops/committed_ops.h"
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
    Send(req, err != 0 ? Reply::Error(err) : Reply::XattrBytes(value, size));
    return;
  }
  if (inode->is_virtual_root()) {
    Send(req, Reply::Error(ENODATA));
    return;
  }
  Serve(
      req, inode, Access::kRead,
      [&] { return committed::Getxattr(Caller::Of(req), fs, inode, name, size); },
      [&](const TxGuard& tx) { return txops::Getxattr(fs, tx, inode, name, size); });
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root()) {
    Send(req, committed::Listxattr(Caller::Of(req), fs, inode, size));
    return;
  }
  Serve(
      req, inode, Access::kRead,
      [&] { return committed::Listxattr(Caller::Of(req), fs, inode, size); },
      [&](const TxGuard& tx) { return txops::Listxattr(fs, tx, inode, size); });
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
      [&] { return committed::Setxattr(Caller::Of(req), fs, inode, name, value, size, flags); },
      [&](const TxGuard& tx) {
        return txops::Setxattr(Caller::Of(req), fs, tx, inode, name, value, size, flags);
      });
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root() || IsControlXattr(name)) {
    Send(req, Reply::Error(inode->is_virtual_root() ? EPERM : ENODATA));
    return;
  }
  Serve(
      req, inode, Access::kChange,
      [&] { return committed::Removexattr(Caller::Of(req), fs, inode, name); },
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

// Name and attribute requests: lookup and forget, getattr/setattr, and everything that
// creates, links, renames or removes a name, served through the adapter by committed_entry.cc or
// tx_ops_entry.cc.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/adapter.h"
#include "fs/ops/committed_ops.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/permission.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"

namespace ktmfs::fs {
namespace {

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Serve(
      req, p, Access::kChange, [&] { return committed::Lookup(Caller::Of(req), fs, p, name); },
      [&](const TxGuard& tx) { return txops::Lookup(fs, tx, p, name); });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Filesystem& fs = Fs(req);
  fs.inodes().Forget(fs.Get(ino), nlookup);
  Send(req, Reply::None());
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Filesystem& fs = Fs(req);
  for (size_t i = 0; i < count; i++)
    fs.inodes().Forget(fs.Get(forgets[i].ino), forgets[i].nlookup);
  Send(req, Reply::None());
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  // A file's handle says which view it belongs to; only a node asks for classifying.
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(
        req, fi, [&](const TxGuard& tx) { return txops::GetattrByHandle(fs, tx, fi); },
        Access::kRead);
    return;
  }
  Inode* inode = fs.Get(ino);
  if (fi != nullptr) {
    Send(req, committed::Getattr(fs, inode, fi));
    return;
  }
  Serve(
      req, inode, Access::kRead, [&] { return committed::Getattr(fs, inode, nullptr); },
      [&](const TxGuard& tx) { return txops::Getattr(fs, tx, inode); });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(req, fi, [&](const TxGuard& tx) {
      return txops::SetattrByHandle(Caller::Of(req), fs, tx, attr, to_set, fi);
    });
    return;
  }
  if (fi != nullptr) {
    Send(req, committed::Setattr(Caller::Of(req), fs, inode, attr, to_set, fi));
    return;
  }
  Serve(
      req, inode, Access::kChange,
      [&] { return committed::Setattr(Caller::Of(req), fs, inode, attr, to_set, nullptr); },
      [&](const TxGuard& tx) {
        return txops::Setattr(Caller::Of(req), fs, tx, inode, attr, to_set);
      });
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  Serve(
      req, inode, Access::kRead, [&] { return committed::Readlink(inode); },
      [&](const TxGuard& tx) { return txops::Readlink(fs, tx, inode); });
}

void MakeEntry(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
               const char* link_target) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Serve(
      req, p, Access::kChange,
      [&] { return committed::Make(Caller::Of(req), fs, p, name, mode, rdev, link_target); },
      [&](const TxGuard& tx) {
        return txops::Make(Caller::Of(req), fs, tx, p, name, mode, rdev, link_target);
      });
}

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  MakeEntry(req, parent, name, mode, rdev, nullptr);
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  MakeEntry(req, parent, name, S_IFDIR | (mode & 07777), 0, nullptr);
}

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  MakeEntry(req, parent, name, S_IFLNK | 0777, 0, link);
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  Inode* p = fs.Get(newparent);
  ServePair(
      req, inode, p, PairRule::kLink,
      [&] { return committed::Link(Caller::Of(req), fs, inode, p, newname); },
      [&](const TxGuard& tx) { return txops::Link(Caller::Of(req), fs, tx, inode, p, newname); });
}

void RemoveEntry(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Serve(
      req, p, Access::kChange, [&] { return committed::Remove(Caller::Of(req), fs, p, name, dir); },
      [&](const TxGuard& tx) { return txops::Remove(Caller::Of(req), fs, tx, p, name, dir); });
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, false);
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveEntry(req, parent, name, true);
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Inode* np = fs.Get(newparent);
  ServePair(
      req, p, np, PairRule::kRename,
      [&] { return committed::Rename(Caller::Of(req), fs, p, name, np, newname, flags); },
      [&](const TxGuard& tx) {
        return txops::Rename(Caller::Of(req), fs, tx, p, name, np, newname, flags);
      });
}

}  // namespace

void AddEntryOps(fuse_lowlevel_ops* ops) {
  ops->lookup = OpLookup;
  ops->forget = OpForget;
  ops->forget_multi = OpForgetMulti;
  ops->getattr = OpGetattr;
  ops->setattr = OpSetattr;
  ops->readlink = OpReadlink;
  ops->mknod = OpMknod;
  ops->mkdir = OpMkdir;
  ops->symlink = OpSymlink;
  ops->link = OpLink;
  ops->unlink = OpUnlink;
  ops->rmdir = OpRmdir;
  ops->rename = OpRename;
}

}  // namespace ktmfs::fs

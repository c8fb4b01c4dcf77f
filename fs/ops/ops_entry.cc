// Name and attribute operations: lookup and forget, getattr/setattr, and everything that
// creates, links, renames or removes a name. All of them act through *at() calls relative to
// O_PATH descriptors and never follow a symlink, so no name leads outside the backing trees.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "fs/fuse/caller.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/permission.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"

namespace ktmfs::fs {
namespace {

// A name operation's parent must be a real directory: the virtual root's entries are fixed.
int CheckParent(Filesystem& fs, Inode* parent, const char* name) {
  if (parent->is_virtual_root()) return EPERM;
  if (fs.IsHiddenName(parent, name)) return EPERM;  // the name is taken by the state directory
  return 0;
}

void ReplyNewEntry(fuse_req_t req, Filesystem& fs, Inode* parent, const char* name) {
  fuse_entry_param e;
  int err = fs.Lookup(parent, name, &e);
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Filesystem& fs = Fs(req);
  TxGuard tx = fs.EnterTx(req);
  Inode* p = fs.Get(parent);
  if (Routed(req, Classify(fs, tx, p), [&] { txops::Lookup(req, fs, tx, p, name); })) return;
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  fuse_entry_param e;
  fstx::VisibilityGate::Pass visible;
  int err;
  for (;;) {
    visible = fs.ReadingCommitted(p);
    err = fs.Lookup(p, name, &e);
    fstx::VisibilityGate::Key closed;
    if (err != 0 || fs.ReadingCommittedEntry(visible, &e, &closed)) break;
    fs.inodes().Forget(fs.Get(e.ino), 1);
    visible.Release();
    fs.AwaitApply(closed);
  }
  // A transaction may create the name in its own view of this directory: the kernel's cached
  // absence would hide it from the transaction's tasks.
  if (err == ENOENT && fs.options().cache.negative_timeout > 0 &&
      !(fs.txs() != nullptr && fs.txs()->IsTouched(p->dev, p->ino))) {
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = fs.options().cache.negative_timeout;
    fuse_reply_entry(req, &e);
  } else if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_entry(req, &e);
  }
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Filesystem& fs = Fs(req);
  fs.inodes().Forget(fs.Get(ino), nlookup);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Filesystem& fs = Fs(req);
  for (size_t i = 0; i < count; i++)
    fs.inodes().Forget(fs.Get(forgets[i].ino), forgets[i].nlookup);
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  if (txops::IsTxHandle(fi)) {
    txops::GetattrByHandle(req, fs, fi);
    return;
  }
  Inode* inode = fs.Get(ino);
  if (fi == nullptr) {
    TxGuard tx = fs.EnterTx(req);
    if (Routed(req, ClassifyRead(fs, tx, inode), [&] { txops::Getattr(req, fs, tx, inode); }))
      return;
  }
  struct stat st;
  int err;
  auto visible = fs.ReadingCommitted(inode);
  if (fi != nullptr) {
    err = fstat(static_cast<int>(fi->fh), &st) == 0 ? 0 : errno;
  } else {
    err = fs.Stat(inode, &st);
  }
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_attr(req, &st, fs.AttrTimeout(inode));
  }
}

timespec TimeToSet(int to_set, int set_bit, int now_bit, const timespec& value) {
  if (to_set & now_bit) return timespec{0, UTIME_NOW};
  if (to_set & set_bit) return value;
  return timespec{0, UTIME_OMIT};
}

int ApplySetattr(Filesystem& fs, Inode* inode, const struct stat* attr, int to_set,
                 fuse_file_info* fi) {
  // Only regular files carry a backing descriptor in fh (directories hold a DirHandle).
  const int fh = fi != nullptr && inode->type == S_IFREG ? static_cast<int>(fi->fh) : -1;
  if (to_set & FUSE_SET_ATTR_MODE) {
    auto chmod_it = [&] {
      int r = fh >= 0 ? fchmod(fh, attr->st_mode)
                      : chmod(ProcPath(inode->Fd().get()).c_str(), attr->st_mode);
      return r == 0 ? 0 : errno;
    };
    // Writes the kernel passes through would not clear the bits (fs/ops/passthrough.h).
    int err = (attr->st_mode & (S_ISUID | S_ISGID))
                  ? fs.passthrough().WithoutWriters(fs, inode, chmod_it)
                  : chmod_it();
    if (err != 0) return err;
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (fchownat(inode->Fd().get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
      return errno;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    int r = fh >= 0 ? ftruncate(fh, attr->st_size)
                    : truncate(ProcPath(inode->Fd().get()).c_str(), attr->st_size);
    if (r != 0) return errno;
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                FUSE_SET_ATTR_MTIME_NOW)) {
    timespec ts[2] = {
        TimeToSet(to_set, FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr->st_atim),
        TimeToSet(to_set, FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr->st_mtim),
    };
    int r = fh >= 0 ? futimens(fh, ts)
                    : utimensat(inode->Fd().get(), "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    if (r != 0) return errno;
  }
  return 0;
}

// A SETATTR that sets nothing is the kernel's chown(f, -1, -1), or what is left of its clearing
// of set-id bits for a write: the local filesystem would change ctime (fs/ops/setid.h). chown(-1,
// -1) by the daemon changes nothing else: the kernel has already sent the clearing of whatever bit
// root's chown would clear. Best effort: the caller's chown itself succeeded.
void TouchCtime(Inode* inode) {
  (void)fchownat(inode->Fd().get(), "", static_cast<uid_t>(-1), static_cast<gid_t>(-1),
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (txops::IsTxHandle(fi)) {
    txops::SetattrByHandle(req, fs, attr, to_set, fi);
    return;
  }
  if (fi == nullptr) {
    TxGuard tx = fs.EnterTx(req);
    if (Routed(req, Classify(fs, tx, inode),
               [&] { txops::Setattr(req, fs, tx, inode, attr, to_set); }))
      return;
  }
  if (inode->is_virtual_root()) {
    fuse_reply_err(req, EPERM);
    return;
  }
  // A setattr that changes nothing (chown(f, -1, -1)) conflicts with no transaction.
  int err = SetattrFields(to_set) != 0 ? txops::CheckNotHeld(fs, inode) : 0;
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  // The set-id bits the kernel leaves set for the daemon to clear, decided on the object as it
  // is before the change.
  struct stat a = *attr, before;
  if (fs.Stat(inode, &before) == 0) AdjustSetattrForSetid(req, before, &a, &to_set);
  {
    IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
    err = ApplySetattr(fs, inode, &a, to_set, fi);
  }
  if (err == 0 && (to_set & ~FUSE_SET_ATTR_CTIME) == 0) TouchCtime(inode);
  struct stat st;
  if (err == 0) err = fs.Stat(inode, &st);
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_attr(req, &st, fs.AttrTimeout(inode));
  }
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, ClassifyRead(fs, tx, inode), [&] { txops::Readlink(req, fs, tx, inode); }))
    return;
  char buf[PATH_MAX + 1];
  ssize_t n = inode->is_virtual_root() ? -1 : readlinkat(inode->Fd().get(), "", buf, sizeof buf);
  if (n < 0) {
    fuse_reply_err(req, inode->is_virtual_root() ? EINVAL : errno);
    return;
  }
  if (static_cast<size_t>(n) >= sizeof buf) {
    fuse_reply_err(req, ENAMETOOLONG);
    return;
  }
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

// mknod, mkdir and symlink: check the parent and name, make the object as the caller (so it
// is theirs), and reply with its entry. `make` does the one system call that differs.
template <typename Make>
void MakeEntry(fuse_req_t req, fuse_ino_t parent, const char* name, Make make, mode_t mode,
               dev_t rdev, const char* link_target) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, Classify(fs, tx, p),
             [&] { txops::Make(req, fs, tx, p, name, mode, rdev, link_target); }))
    return;
  if (int err = CheckParent(fs, p, name); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (int err = txops::CheckEntryNotHeld(fs, p, name); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  IdentityScope id(req, IdentityUse::kCreates, fs.kernel_checks());
  if (make(p->Fd().get(), id) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  ReplyNewEntry(req, fs, p, name);
}

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  MakeEntry(
      req, parent, name,
      [&](int dirfd, const IdentityScope& id) {
        return mknodat(dirfd, name, id.CreateMode(mode), rdev);
      },
      mode, rdev, nullptr);
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  MakeEntry(
      req, parent, name,
      [&](int dirfd, const IdentityScope& id) { return mkdirat(dirfd, name, id.CreateMode(mode)); },
      S_IFDIR | (mode & 07777), 0, nullptr);
}

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  MakeEntry(
      req, parent, name,
      [&](int dirfd, const IdentityScope&) { return symlinkat(link, dirfd, name); }, S_IFLNK | 0777,
      0, link);
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  Inode* p = fs.Get(newparent);
  TxGuard tx = fs.EnterTx(req);
  Route ri = Classify(fs, tx, inode), rp = Classify(fs, tx, p);
  if (ri == Route::kStale || rp == Route::kStale) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  if (tx && ri == Route::kTx && rp == Route::kTx) {
    txops::Link(req, fs, tx, inode, p, newname);
    return;
  }
  if (tx) {  // a version node of an ended transaction inside another one
    fuse_reply_err(req, ESTALE);
    return;
  }
  if (int err = txops::CheckNotHeld(fs, inode); err == 0) {
    err = txops::CheckEntryNotHeld(fs, p, newname);
    if (err != 0) {
      fuse_reply_err(req, err);
      return;
    }
  } else {
    fuse_reply_err(req, err);
    return;
  }
  if (int err = CheckParent(fs, p, newname); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (inode->is_virtual_root() || inode->pinned) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if (inode->source_index != p->source_index) {
    fuse_reply_err(req, EXDEV);  // each source is its own resource manager
    return;
  }
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  // Through /proc: linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH, which a thread acting
  // as the caller does not have.
  if (linkat(AT_FDCWD, ProcPath(inode->Fd().get()).c_str(), p->Fd().get(), newname,
             AT_SYMLINK_FOLLOW) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  ReplyNewEntry(req, fs, p, newname);
}

void RemoveName(fuse_req_t req, fuse_ino_t parent, const char* name, int flags) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  TxGuard tx = fs.EnterTx(req);
  if (Routed(req, Classify(fs, tx, p),
             [&] { txops::Remove(req, fs, tx, p, name, (flags & AT_REMOVEDIR) != 0); }))
    return;
  if (int err = txops::CheckEntryNotHeld(fs, p, name); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (p->is_virtual_root()) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if (fs.IsHiddenName(p, name)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  fuse_reply_err(req, unlinkat(p->Fd().get(), name, flags) == 0 ? 0 : errno);
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveName(req, parent, name, 0);
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  RemoveName(req, parent, name, AT_REMOVEDIR);
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Inode* np = fs.Get(newparent);
  TxGuard tx = fs.EnterTx(req);
  Route r1 = Classify(fs, tx, p), r2 = Classify(fs, tx, np);
  if (r1 == Route::kStale || r2 == Route::kStale ||
      (tx && (r1 != Route::kTx) != (r2 != Route::kTx))) {
    fuse_reply_err(req, ESTALE);
    return;
  }
  if (r1 == Route::kTx) {
    txops::Rename(req, fs, tx, p, name, np, newname, flags);
    return;
  }
  if (int err = txops::CheckRenameNotHeld(fs, p, name, np, newname); err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (p->is_virtual_root() || np->is_virtual_root()) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if (p->source_index != np->source_index) {
    fuse_reply_err(req, EXDEV);  // each source is its own resource manager
    return;
  }
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  // The state directory cannot be moved, nor replaced, nor anything moved over its name.
  if (fs.IsHiddenName(p, name)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (fs.IsHiddenName(np, newname)) {
    fuse_reply_err(req, EPERM);
    return;
  }
  IdentityScope id(req, IdentityUse::kChecks, fs.kernel_checks());
  fuse_reply_err(req,
                 renameat2(p->Fd().get(), name, np->Fd().get(), newname, flags) == 0 ? 0 : errno);
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

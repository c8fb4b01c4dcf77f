// The committed view's name and attribute operations (committed_ops.h): lookup, getattr and
// setattr, readlink, and what makes, links, renames or removes a name. All of them act through
// *at() calls relative to O_PATH descriptors and never follow a symlink, so no name leads outside
// the backing trees.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <optional>
#include <string>

#include "fs/ops/committed_ops.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/permission.h"
#include "fs/ops/posix_acl.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs::committed {
namespace {

// The object's access ACL as the backing file has it, or nullopt without one.
std::optional<PosixAcl> CommittedAccessAcl(Inode* inode) {
  std::string v(256, '\0');
  for (;;) {
    const ssize_t n =
        getxattr(ProcPath(inode->Fd().get()).c_str(), kAclAccessXattr, v.data(), v.size());
    if (n >= 0) {
      v.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE || v.size() >= (64 << 10)) return std::nullopt;
    v.resize(v.size() * 4);
  }
  auto acl = PosixAcl::Parse(v);
  if (!acl || acl->empty()) return std::nullopt;
  return acl;
}

// A name operation's parent must be a real directory: the virtual root's entries are fixed.
int CheckParent(Filesystem& fs, Inode* parent, const char* name) {
  if (parent->is_virtual_root()) return EPERM;
  if (fs.IsHiddenName(parent, name)) return EPERM;  // the name is taken by the state directory
  return 0;
}

Reply NewEntry(Filesystem& fs, Inode* parent, const char* name) {
  fuse_entry_param e;
  int err = fs.Lookup(parent, name, &e);
  return err != 0 ? Reply::Error(err) : Reply::Entry(e);
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

}  // namespace

Reply Lookup(const Caller& caller, Filesystem& fs, Inode* p, const char* name) {
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
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
    fs.AwaitApplyOrServed(closed);
  }
  // A transaction may create the name in its own view of this directory: the kernel's cached
  // absence would hide it from the transaction's tasks.
  if (err == ENOENT && fs.options().cache.negative_timeout > 0 &&
      !(fs.txs() != nullptr && fs.txs()->IsTouched(p->dev, p->ino))) {
    std::memset(&e, 0, sizeof e);
    e.entry_timeout = fs.options().cache.negative_timeout;
    return Reply::Entry(e).Holding(std::move(visible));
  }
  return (err != 0 ? Reply::Error(err) : Reply::Entry(e)).Holding(std::move(visible));
}

// The attributes of a committed node, or through a committed file's descriptor `fi`.
Reply Getattr(Filesystem& fs, Inode* inode, fuse_file_info* fi) {
  struct stat st;
  int err = 0;
  auto visible = fs.ReadingCommittedOrServed(inode);
  if (const fstx::ServedObject* served = fs.ServedFrom(visible, inode)) {
    st = served->Attributes();
  } else if (fi != nullptr) {
    err = fstat(static_cast<int>(fi->fh), &st) == 0 ? 0 : errno;
  } else {
    err = fs.Stat(inode, &st);
  }
  return (err != 0 ? Reply::Error(err) : Reply::Attr(st, fs.AttrTimeout(inode)))
      .Holding(std::move(visible));
}

Reply Setattr(const Caller& caller, Filesystem& fs, Inode* inode, struct stat* attr, int to_set,
              fuse_file_info* fi) {
  if (inode->is_virtual_root()) return Reply::Error(EPERM);
  // A setattr that changes nothing (chown(f, -1, -1)) conflicts with no transaction.
  int err = SetattrFields(to_set) != 0 ? txops::CheckNotHeld(fs, inode) : 0;
  if (err != 0) return Reply::Error(err);
  // The set-id bits the kernel leaves set for the daemon to clear, decided on the object as it
  // is before the change.
  struct stat a = *attr, before;
  if (fs.Stat(inode, &before) == 0 && AdjustSetattrForSetid(caller, before, &a, &to_set)) {
    // The kernel checked what it sent, not the bits the daemon drops on its own: a
    // chown(f, -1, -1) arrives without fields and unchecked, from anyone. Dropping them is the
    // owner's, or a writer's (the kernel's clearing for a write arrives so), as MaySetattr says;
    // anyone else gets EPERM, as natively, and the bits stay.
    const std::optional<PosixAcl> acl = CommittedAccessAcl(inode);
    if (int e = MaySetattr(txops::RequesterOf(caller), before, FUSE_SET_ATTR_MODE, a, fi != nullptr,
                           OrNull(acl));
        e != 0)
      return Reply::Error(e);
  }
  {
    IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
    err = ApplySetattr(fs, inode, &a, to_set, fi);
  }
  if (err == 0 && (to_set & ~FUSE_SET_ATTR_CTIME) == 0) TouchCtime(inode);
  struct stat st;
  if (err == 0) err = fs.Stat(inode, &st);
  return err != 0 ? Reply::Error(err) : Reply::Attr(st, fs.AttrTimeout(inode));
}

Reply Readlink(Inode* inode) {
  if (inode->is_virtual_root()) return Reply::Error(EINVAL);
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(inode->Fd().get(), "", buf, sizeof buf);
  if (n < 0) return Reply::Error(errno);
  if (static_cast<size_t>(n) >= sizeof buf) return Reply::Error(ENAMETOOLONG);
  return Reply::Readlink(std::string(buf, static_cast<size_t>(n)));
}

Reply Make(const Caller& caller, Filesystem& fs, Inode* p, const char* name, mode_t mode,
           dev_t rdev, const char* link_target) {
  if (int err = CheckParent(fs, p, name); err != 0) return Reply::Error(err);
  if (int err = txops::CheckEntryNotHeld(fs, p, name); err != 0) return Reply::Error(err);
  // As the caller, so the object is theirs.
  IdentityScope id(caller, IdentityUse::kCreates, fs.kernel_checks());
  const int dirfd = p->Fd().get();
  int r;
  if (S_ISLNK(mode)) {
    r = symlinkat(link_target, dirfd, name);
  } else if (S_ISDIR(mode)) {
    r = mkdirat(dirfd, name, id.CreateMode(mode & 07777));
  } else {
    r = mknodat(dirfd, name, id.CreateMode(mode), rdev);
  }
  if (r != 0) return Reply::Error(errno);
  return NewEntry(fs, p, name);
}

Reply Link(const Caller& caller, Filesystem& fs, Inode* inode, Inode* p, const char* newname) {
  if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  if (int err = txops::CheckEntryNotHeld(fs, p, newname); err != 0) return Reply::Error(err);
  if (int err = CheckParent(fs, p, newname); err != 0) return Reply::Error(err);
  if (inode->is_virtual_root() || inode->pinned) return Reply::Error(EPERM);
  // Each source is its own resource manager.
  if (inode->source_index != p->source_index) return Reply::Error(EXDEV);
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
  // A new name may grow the directory: space as the caller's (writer_identity.h).
  fstx::WriterIdentity space(caller.uid(), caller.gid());
  // Through /proc: linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH, which a thread acting
  // as the caller does not have.
  if (linkat(AT_FDCWD, ProcPath(inode->Fd().get()).c_str(), p->Fd().get(), newname,
             AT_SYMLINK_FOLLOW) != 0)
    return Reply::Error(errno);
  return NewEntry(fs, p, newname);
}

Reply Remove(const Caller& caller, Filesystem& fs, Inode* p, const char* name, bool dir) {
  if (int err = txops::CheckEntryNotHeld(fs, p, name); err != 0) return Reply::Error(err);
  if (p->is_virtual_root()) return Reply::Error(EPERM);
  if (fs.IsHiddenName(p, name)) return Reply::Error(ENOENT);
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
  return Reply::Error(unlinkat(p->Fd().get(), name, dir ? AT_REMOVEDIR : 0) == 0 ? 0 : errno);
}

Reply Rename(const Caller& caller, Filesystem& fs, Inode* p, const char* name, Inode* np,
             const char* newname, unsigned int flags) {
  if (int err = txops::CheckRenameNotHeld(fs, p, name, np, newname); err != 0)
    return Reply::Error(err);
  if (p->is_virtual_root() || np->is_virtual_root()) return Reply::Error(EPERM);
  // Each source is its own resource manager.
  if (p->source_index != np->source_index) return Reply::Error(EXDEV);
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE))
    return Reply::Error(EINVAL);
  // The state directory cannot be moved, nor replaced, nor anything moved over its name.
  if (fs.IsHiddenName(p, name)) return Reply::Error(ENOENT);
  if (fs.IsHiddenName(np, newname)) return Reply::Error(EPERM);
  // Nor a directory on the way to it (a rename over one fails natively: it is not empty).
  if (fs.IsGuardedName(p, name) || ((flags & RENAME_EXCHANGE) && fs.IsGuardedName(np, newname)))
    return Reply::Error(EBUSY);
  IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
  fstx::WriterIdentity space(caller.uid(), caller.gid());
  return Reply::Error(renameat2(p->Fd().get(), name, np->Fd().get(), newname, flags) == 0 ? 0
                                                                                          : errno);
}

}  // namespace ktmfs::fs::committed

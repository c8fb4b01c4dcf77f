// Name and attribute operations inside a transaction (see tx_ops.h).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "fs/fuse/invalidator.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/apply_plan.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs::txops {

Reply Lookup(Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name) {
  fuse_entry_param e;
  int err;
  if (parent->is_virtual_root() || std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) {
    err = fs.Lookup(parent, name, &e);
  } else if (fs.IsHiddenName(parent, name)) {
    err = ENOENT;
  } else {
    // The child's attributes come from its backing object, which a commit may still be
    // writing after letting readers in (Filesystem::ReadingInTx), or from what apply serves
    // meanwhile, through the pass.
    auto pass = fs.ReadingInTx(parent);
    ReadingThrough through(tx, &pass);
    for (;;) {
      auto view = ViewDir(fs, tx, parent);
      err = view.ok() ? TxLookupEntry(fs, tx, parent->source_index, *view, name, &e)
                      : view.status().code();
      if (err != 0) break;
      Inode* child = fs.Get(e.ino);
      const Filesystem::TxLook next = fs.LookAgainInTx(pass, child);
      if (next == Filesystem::TxLook::kAnswer) break;
      const fstx::VisibilityGate::Key key = GateKey(child);
      fs.inodes().Forget(child, 1);
      if (next == Filesystem::TxLook::kWait) {
        pass.Release();
        fs.AwaitApplyOrServed(key);
        pass = fs.ReadingInTx(parent);
      }
    }
  }
  return err != 0 ? Reply::Error(err) : Reply::Entry(e);
}

Reply Getattr(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  struct stat st;
  int err = TxStat(fs, tx, inode, &st);
  return err != 0 ? Reply::Error(err) : Reply::Attr(st, ViewAttrTimeout(fs, tx, inode));
}

namespace {

int SetattrView(Filesystem& fs, const TxGuard& tx, const Requester& who, Inode* inode,
                const struct stat* attr, int to_set, bool by_handle) {
  // A setattr with none of the fields the daemon sets changes nothing and takes no lock:
  // chown(f, -1, -1) arrives so, and the kernel checks nothing for it, so any user could
  // otherwise lock any file it can see. Natively it still stamps ctime: here in the
  // transaction's own view only (nothing is logged, so the commit does not carry it).
  if (SetattrFields(to_set) == 0) {
    if (inode->is_virtual_root() || inode->pinned) return 0;
    return StampUnlogged(fs, tx, inode->source_index, ObjectOf(inode));
  }
  if (inode->is_virtual_root() || inode->pinned) {
    // The roots' own attributes are the mount's; changing them is not transacted.
    if (to_set & ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) return EPERM;
    return 0;
  }
  const int source = inode->source_index;
  const fstx::ObjectId object = ObjectOf(inode);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return path.status().code();
  // Permission before the lock: a transaction holds nothing its caller may not change.
  struct stat st;
  if (int err = TxStat(fs, tx, inode, &st); err != 0) return err;
  const std::optional<PosixAcl> acl = ViewAcl(fs, tx, inode, kAclAccessXattr);
  if (int err = MaySetattr(who, st, to_set, *attr, by_handle, OrNull(acl)); err != 0) return err;
  // A running program's file is not truncated (ETXTBSY, as natively: see txops::Open).
  if ((to_set & FUSE_SET_ATTR_SIZE) && object.kind == fstx::ObjectId::Kind::kExisting &&
      fs.inodes().IsExecuting(inode->source_index, inode->dev, inode->ino))
    return ETXTBSY;
  TakenLocks taken(fs, tx, source);
  if (int err = LockObject(fs, tx, inode); err != 0) return err;
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (!S_ISREG(inode->type)) return S_ISDIR(inode->type) ? EISDIR : EINVAL;
    if (int err = TruncateLocked(fs, tx, inode, *path, static_cast<uint64_t>(attr->st_size), taken);
        err != 0)
      return err;
  }
  fstx::Op op;
  op.kind = fstx::OpKind::kSetattr;
  op.object = object;
  op.path = *path;
  if (to_set & FUSE_SET_ATTR_MODE) {
    op.set_mask |= fstx::kSetMode;
    op.mode = attr->st_mode & 07777;
  }
  if (to_set & FUSE_SET_ATTR_UID) {
    op.set_mask |= fstx::kSetUid;
    op.uid = attr->st_uid;
  }
  if (to_set & FUSE_SET_ATTR_GID) {
    op.set_mask |= fstx::kSetGid;
    op.gid = attr->st_gid;
  }
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  const int64_t now_ns = now.tv_sec * 1000000000ll + now.tv_nsec;
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
    op.set_mask |= fstx::kSetAtime;
    op.atime_ns = (to_set & FUSE_SET_ATTR_ATIME_NOW)
                      ? now_ns
                      : attr->st_atim.tv_sec * 1000000000ll + attr->st_atim.tv_nsec;
  }
  std::optional<timespec> mtime;
  // A created file's modification time is its staged file's (see TxStat), and the commit keeps
  // it as the staged file has it: set there and not logged, so the writes that follow (the
  // daemon may not see them) move it on. Set before the rest is logged, and put back if the log
  // refuses that, so a failed setattr changes nothing.
  std::optional<timespec> staged_mtime_before;
  const NodeFd staged_fd = IsCreatedFile(inode) ? inode->Fd() : NodeFd();
  const ProcPath staged(staged_fd.get());
  if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
    mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : attr->st_mtim;
    if (staged_fd.get() >= 0) {
      struct stat before;
      if (fstat(staged_fd.get(), &before) != 0) return errno;
      const timespec times[2] = {{0, UTIME_OMIT}, *mtime};
      if (utimensat(AT_FDCWD, staged.c_str(), times, 0) != 0) return errno;
      staged_mtime_before = before.st_mtim;
    } else {
      op.set_mask |= fstx::kSetMtime;
      op.mtime_ns = mtime->tv_sec * 1000000000ll + mtime->tv_nsec;
    }
  }
  if (op.set_mask != 0) {
    Status s = fs.txs()->LogOp(*tx, source, op);
    if (!s.ok()) {
      if (staged_mtime_before) {
        const timespec times[2] = {{0, UTIME_OMIT}, *staged_mtime_before};
        (void)utimensat(AT_FDCWD, staged.c_str(), times, 0);
      }
      return Errno(s);
    }
  }
  taken.Keep();
  // chmod carries the new permission bits into the access ACL, as the backing filesystem's
  // chmod will at the commit (posix_acl_chmod).
  if ((op.set_mask & fstx::kSetMode) && acl) {
    PosixAcl changed = *acl;
    changed.Chmod(op.mode);
    Status s = LogXattr(fs, tx, source, object, *path, kAclAccessXattr, changed.Serialize());
    if (!s.ok()) return Errno(s);
  }
  // Something was logged, or the file is one the transaction created (only its staged file's
  // mtime changed): either way an op made the overlay, and paid for the entry.
  TouchTimes(fs, tx, source, object, false);
  if (mtime) {
    if (fstx::TxOverlay* ov = OverlayOfLogged(fs, tx, source)) ov->SetMtime(object, *mtime);
  }
  return 0;
}

}  // namespace

int SetattrIn(Filesystem& fs, const TxGuard& tx, const Requester& who, Inode* inode,
              const struct stat* attr, int to_set, bool by_handle) {
  auto change = [&] { return SetattrView(fs, tx, who, inode, attr, to_set, by_handle); };
  // Writes the kernel passes through would not clear set-id bits (fs/ops/passthrough.h).
  const bool setid = (to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & (S_ISUID | S_ISGID));
  return setid && IsCreatedFile(inode) ? fs.passthrough().WithoutWriters(fs, inode, change)
                                       : change();
}

Reply Setattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
              const struct stat* attr, int to_set, bool by_handle) {
  // The set-id bits the kernel leaves set for the daemon to clear (fs/ops/setid.h), decided on the
  // view before the change, join the change as a mode.
  struct stat a = *attr, before;
  if (TxStat(fs, tx, inode, &before) == 0) AdjustSetattrForSetid(caller, before, &a, &to_set);
  int err = SetattrIn(fs, tx, RequesterOf(caller), inode, &a, to_set, by_handle);
  if (err != 0) return Reply::Error(err);
  return Getattr(fs, tx, inode);
}

int DropSetidForWrite(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode) {
  struct stat st;
  if (TxStat(fs, tx, inode, &st) != 0) return 0;
  const mode_t drop = SetidBitsToDrop(caller, st, SetidChange::kWrite);
  if ((st.st_mode & drop) == 0) return 0;
  struct stat a {};
  a.st_mode = st.st_mode & 07777 & ~drop;
  int err = SetattrIn(fs, tx, RequesterOf(caller), inode, &a, FUSE_SET_ATTR_MODE, false);
  // The kernel's cached mode still has the bits (nothing replies with the new attributes).
  if (err == 0 && fs.invalidator() != nullptr)
    fs.invalidator()->Attributes(fs.inodes().NodeId(inode));
  return err;
}

Reply Readlink(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  if (fstx::TxOverlay* ov = fs.txs()->rm(inode->source_index).Overlay(tx.id())) {
    if (auto target = ov->Readlink(ObjectOf(inode))) return Reply::Readlink(*target);
  }
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(inode->Fd().get(), "", buf, sizeof buf - 1);
  if (n < 0) return Reply::Error(errno);
  return Reply::Readlink(std::string(buf, static_cast<size_t>(n)));
}

namespace {

// The owner and mode a new object gets in `dir` (setgid directories pass their group on).
void NewOwnership(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* dir, mode_t* mode,
                  uint32_t* uid, uint32_t* gid) {
  *uid = caller.uid();
  *gid = caller.gid();
  struct stat pst;
  if (TxStat(fs, tx, dir, &pst) == 0 && (pst.st_mode & S_ISGID)) {
    *gid = pst.st_gid;
    if (S_ISDIR(*mode)) *mode |= S_ISGID;
  }
}

}  // namespace

int MakeIn(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
           mode_t mode, dev_t rdev, const char* link_target, std::string* made_path,
           uint64_t* number) {
  auto pv = ParentView(fs, tx, parent, name);
  if (!pv.ok()) return pv.status().code();
  const int source = parent->source_index;
  auto existing = LookupView(fs, tx, source, pv->view, name);
  if (!existing.ok()) return existing.status().code();
  if (existing->exists) return EEXIST;
  auto& rm = fs.txs()->rm(source);
  struct stat pst;
  if (int err = TxStat(fs, tx, parent, &pst); err != 0) return err;
  if (int err = MayChangeEntry(RequesterOf(caller), pst, nullptr,
                               OrNull(ViewAcl(fs, tx, parent, kAclAccessXattr)));
      err != 0)
    return err;
  TakenLocks taken(fs, tx, source);
  if (int err = LockEntry(fs, tx, parent, name); err != 0) return err;
  auto staging = rm.Staging(tx.id());
  if (!staging.ok()) return Errno(staging.status());
  auto n = rm.NewObjectNumber(tx.id());
  if (!n.ok()) return Errno(n.status());
  const std::string staged = fstx::StagedNameForNew(*n);
  fstx::Op op;
  op.object = fstx::ObjectId::New(*n);
  op.path = JoinPath(pv->view, name);
  NewOwnership(caller, fs, tx, parent, &mode, &op.uid, &op.gid);
  // The parent's default ACL, when it has one, narrows the mode and becomes the new object's
  // ACLs (posix_acl_create); otherwise the caller's umask applies. Symlinks take neither.
  std::optional<PosixAcl> inherited_access, inherited_default;
  if (link_target == nullptr) {
    if (auto def = ViewAcl(fs, tx, parent, kAclDefaultXattr)) {
      PosixAcl access = *def;
      if (access.CreateMasq(&mode)) inherited_access = std::move(access);
      if (S_ISDIR(mode)) inherited_default = std::move(def);
    } else {
      mode &= ~caller.umask();
    }
  }
  op.mode = mode;
  if (link_target != nullptr) {
    op.kind = fstx::OpKind::kSymlink;
    op.target = link_target;
  } else if (S_ISDIR(mode)) {
    op.kind = fstx::OpKind::kMkdir;
  } else if (S_ISREG(mode) || (mode & S_IFMT) == 0) {
    op.kind = fstx::OpKind::kCreate;
    op.mode = S_IFREG | (mode & 07777);
    op.staged_file = staged;
  } else {
    op.kind = fstx::OpKind::kMknod;
    op.rdev = rdev;
  }
  // Counted before anything is staged: a create refused for its owner's cap leaves nothing.
  auto prepaid = fs.txs()->ChargeFor(*tx, op);
  if (!prepaid.ok()) return Errno(prepaid.status());
  // A link's target, a directory's first block: space as the caller's (writer_identity.h). The
  // staging directory itself is the daemon's.
  Status s = (*staging)->MakeDir();
  if (s.ok()) {
    fstx::WriterIdentity as(caller.uid(), caller.gid());
    switch (op.kind) {
      case fstx::OpKind::kSymlink:
        s = (*staging)->NewSymlink(staged, link_target);
        break;
      case fstx::OpKind::kMkdir:
        s = (*staging)->NewDirectory(staged, mode & 07777);
        break;
      case fstx::OpKind::kCreate: {
        auto f = (*staging)->NewFile(staged);
        s = f.ok() ? Status::Ok() : f.status();
        break;
      }
      default:
        s = (*staging)->NewNode(staged, mode, rdev);
        break;
    }
  }
  if (s.ok()) {
    s = fs.txs()->LogOp(*tx, source, op, *prepaid);
  } else {
    fs.txs()->Refund(*tx, *prepaid);
  }
  if (s.ok()) taken.Keep();
  if (s.ok() && inherited_access)
    s = LogXattr(fs, tx, source, op.object, op.path, kAclAccessXattr,
                 inherited_access->Serialize());
  if (s.ok() && inherited_default)
    s = LogXattr(fs, tx, source, op.object, op.path, kAclDefaultXattr,
                 inherited_default->Serialize());
  if (!s.ok()) return Errno(s);
  const fstx::ObjectId pobj = ObjectOf(parent);
  TouchTimes(fs, tx, source, pobj, true);
  if (S_ISDIR(mode)) AddLinks(fs, tx, source, pobj, 1);
  MarkParent(fs, tx, parent);
  *made_path = pv->view;
  *number = *n;
  return 0;
}

Reply Make(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
           mode_t mode, dev_t rdev, const char* link_target) {
  std::string view;
  uint64_t n = 0;
  int err = MakeIn(caller, fs, tx, parent, name, mode, rdev, link_target, &view, &n);
  fuse_entry_param e;
  if (err == 0) err = TxLookupEntry(fs, tx, parent->source_index, view, name, &e);
  return err != 0 ? Reply::Error(err) : Reply::Entry(e);
}

Reply Link(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode, Inode* parent,
           const char* name) {
  auto reply = [](int err) { return Reply::Error(err); };
  if (inode->source_index != parent->source_index) return reply(EXDEV);
  if (S_ISDIR(inode->type)) return reply(EPERM);
  auto pv = ParentView(fs, tx, parent, name);
  if (!pv.ok()) return reply(pv.status().code());
  const int source = parent->source_index;
  auto existing = LookupView(fs, tx, source, pv->view, name);
  if (!existing.ok()) return reply(existing.status().code());
  if (existing->exists) return reply(EEXIST);
  auto src = NodePath(fs, tx, inode);
  if (!src.ok()) return reply(src.status().code());
  {
    // may_linkat's protected_hardlinks rule first, then the directory, as link(2) checks them.
    const Requester who = RequesterOf(caller);
    struct stat st, pst;
    if (int err = TxStat(fs, tx, inode, &st); err != 0) return reply(err);
    if (int err = TxStat(fs, tx, parent, &pst); err != 0) return reply(err);
    if (int err =
            MayLink(who, st, ProtectedHardlinks(), OrNull(ViewAcl(fs, tx, inode, kAclAccessXattr)));
        err != 0)
      return reply(err);
    if (int err =
            MayChangeEntry(who, pst, nullptr, OrNull(ViewAcl(fs, tx, parent, kAclAccessXattr)));
        err != 0)
      return reply(err);
  }
  if (int err = ObjectOnBackingMount(fs, tx, inode); err != 0) return reply(err);
  TakenLocks taken(fs, tx, source);
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  if (int err = LockEntry(fs, tx, parent, name); err != 0) return reply(err);
  fstx::Op op;
  op.kind = fstx::OpKind::kLink;
  op.object = ObjectOf(inode);
  op.path = *src;
  op.path2 = JoinPath(pv->view, name);
  Status s = fs.txs()->LogOp(*tx, source, op);
  if (!s.ok()) return reply(Errno(s));
  taken.Keep();
  AddLinks(fs, tx, source, op.object, 1);
  TouchTimes(fs, tx, source, op.object, false);
  TouchTimes(fs, tx, source, ObjectOf(parent), true);
  MarkParent(fs, tx, parent);
  fuse_entry_param e;
  int err = TxLookupEntry(fs, tx, source, pv->view, name, &e);
  if (err != 0) return reply(err);
  return Reply::Entry(e);
}

Reply Remove(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, bool dir) {
  auto reply = [](int err) { return Reply::Error(err); };
  auto pv = ParentView(fs, tx, parent, name);
  if (!pv.ok())
    return reply(pv.status().code() == EPERM && !parent->is_virtual_root() ? ENOENT
                                                                           : pv.status().code());
  const int source = parent->source_index;
  auto v = LookupView(fs, tx, source, pv->view, name);
  if (!v.ok()) return reply(v.status().code());
  if (!v->exists) return reply(ENOENT);
  {
    // may_delete: write and search on the directory, then the sticky bit, before the type.
    struct stat pst;
    if (int err = TxStat(fs, tx, parent, &pst); err != 0) return reply(err);
    const struct stat victim = ViewAttributes(fs, tx, source, v->object, v->st);
    if (int err = MayChangeEntry(RequesterOf(caller), pst, &victim,
                                 OrNull(ViewAcl(fs, tx, parent, kAclAccessXattr)));
        err != 0)
      return reply(err);
  }
  const bool is_dir = S_ISDIR(v->st.st_mode);
  if (dir && !is_dir) return reply(ENOTDIR);
  if (!dir && is_dir) return reply(EISDIR);
  const std::string path = JoinPath(pv->view, name);
  if (is_dir) {
    std::vector<TxDirEntry> entries;
    if (int err = ListViewPath(fs, tx, source, path, &entries); err != 0) return reply(err);
    if (entries.size() > 2) return reply(ENOTEMPTY);  // more than "." and ".."
  }
  if (int err = CheckNotGuarded(fs, v->object); err != 0) return reply(err);
  TakenLocks taken(fs, tx, source);
  if (int err = LockEntry(fs, tx, parent, name); err != 0) return reply(err);
  if (int err = LockObjectId(fs, tx, source, v->object, v->backing_path); err != 0)
    return reply(err);
  if (is_dir && !v->is_new) {
    if (int err = CheckDirMove(fs, tx, source, v->backing_path); err != 0) return reply(err);
  }
  fstx::Op op;
  op.kind = dir ? fstx::OpKind::kRmdir : fstx::OpKind::kUnlink;
  op.object = v->object;
  op.path = path;
  Status s = fs.txs()->LogOp(*tx, source, op);
  if (!s.ok()) return reply(Errno(s));
  taken.Keep();
  const fstx::ObjectId pobj = ObjectOf(parent);
  TouchTimes(fs, tx, source, pobj, true);
  TouchTimes(fs, tx, source, v->object, false);
  AddLinks(fs, tx, source, v->object, is_dir ? -2 : -1);
  if (is_dir) AddLinks(fs, tx, source, pobj, -1);
  MarkParent(fs, tx, parent);
  return reply(0);
}

Reply Rename(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, Inode* newparent, const char* newname, unsigned flags) {
  auto reply = [](int err) { return Reply::Error(err); };
  if (parent->source_index != newparent->source_index) return reply(EXDEV);
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return reply(EINVAL);
  const bool exchange = (flags & RENAME_EXCHANGE) != 0;
  auto sv = ParentView(fs, tx, parent, name);
  if (!sv.ok()) return reply(sv.status().code() == EPERM ? ENOENT : sv.status().code());
  auto dv = ParentView(fs, tx, newparent, newname);
  if (!dv.ok()) return reply(dv.status().code());
  const int source = parent->source_index;
  auto src = LookupView(fs, tx, source, sv->view, name);
  if (!src.ok()) return reply(src.status().code());
  if (!src->exists) return reply(ENOENT);
  auto dst = LookupView(fs, tx, source, dv->view, newname);
  if (!dst.ok()) return reply(dst.status().code());
  if ((flags & RENAME_NOREPLACE) && dst->exists) return reply(EEXIST);
  if (exchange && !dst->exists) return reply(ENOENT);
  const std::string from = JoinPath(sv->view, name);
  const std::string to = JoinPath(dv->view, newname);
  const bool src_dir = S_ISDIR(src->st.st_mode);
  const bool dst_dir = dst->exists && S_ISDIR(dst->st.st_mode);
  if (dst->exists && src->object == dst->object) return reply(0);  // two names of one object
  if (src_dir && (to.size() > from.size() && to.compare(0, from.size(), from) == 0 &&
                  to[from.size()] == '/')) {
    return reply(EINVAL);
  }
  {
    // vfs_rename's checks: removing the source name (sticky bit included), creating or
    // replacing the target name, and a directory that changes parent gets its ".." rewritten.
    const Requester who = RequesterOf(caller);
    struct stat sp, dp;
    if (int err = TxStat(fs, tx, parent, &sp); err != 0) return reply(err);
    if (int err = TxStat(fs, tx, newparent, &dp); err != 0) return reply(err);
    const struct stat s_st = ViewAttributes(fs, tx, source, src->object, src->st);
    struct stat d_st {};
    if (dst->exists) d_st = ViewAttributes(fs, tx, source, dst->object, dst->st);
    if (int err = MayChangeEntry(who, sp, &s_st, OrNull(ViewAcl(fs, tx, parent, kAclAccessXattr)));
        err != 0)
      return reply(err);
    if (int err = MayChangeEntry(who, dp, dst->exists ? &d_st : nullptr,
                                 OrNull(ViewAcl(fs, tx, newparent, kAclAccessXattr)));
        err != 0)
      return reply(err);
    if (ObjectOf(parent) != ObjectOf(newparent)) {
      if (src_dir) {
        if (int err = MayAccess(who, s_st, kMayWrite, OrNull(ViewAcl(fs, tx, source, *src)));
            err != 0)
          return reply(err);
      }
      if (exchange && dst_dir) {
        if (int err = MayAccess(who, d_st, kMayWrite, OrNull(ViewAcl(fs, tx, source, *dst)));
            err != 0)
          return reply(err);
      }
    }
  }
  if (dst->exists && !exchange) {
    if (src_dir && !dst_dir) return reply(ENOTDIR);
    if (!src_dir && dst_dir) return reply(EISDIR);
    if (dst_dir) {
      std::vector<TxDirEntry> entries;
      if (int err = ListViewPath(fs, tx, source, to, &entries); err != 0) return reply(err);
      if (entries.size() > 2) return reply(ENOTEMPTY);
    }
  }
  if (int err = CheckNotGuarded(fs, src->object); err != 0) return reply(err);
  if (dst->exists) {
    if (int err = CheckNotGuarded(fs, dst->object); err != 0) return reply(err);
  }
  TakenLocks taken(fs, tx, source);
  if (int err = LockEntry(fs, tx, parent, name); err != 0) return reply(err);
  if (int err = LockEntry(fs, tx, newparent, newname); err != 0) return reply(err);
  if (int err = LockObjectId(fs, tx, source, src->object, src->backing_path); err != 0)
    return reply(err);
  if (dst->exists) {
    if (int err = LockObjectId(fs, tx, source, dst->object, dst->backing_path); err != 0)
      return reply(err);
  }
  if (src_dir && !src->is_new) {
    if (int err = CheckDirMove(fs, tx, source, src->backing_path); err != 0) return reply(err);
  }
  if (dst_dir && !dst->is_new) {
    if (int err = CheckDirMove(fs, tx, source, dst->backing_path); err != 0) return reply(err);
  }
  fstx::Op op;
  op.kind = fstx::OpKind::kRename;
  op.object = src->object;
  op.path = from;
  op.path2 = to;
  if (dst->exists) op.replaced = dst->object;
  op.flags = flags;
  Status s = fs.txs()->LogOp(*tx, source, op);
  if (!s.ok()) return reply(Errno(s));
  taken.Keep();
  fs.inodes().MoveViewPaths(tx.id(), source, from, to, exchange);
  const fstx::ObjectId p1 = ObjectOf(parent), p2 = ObjectOf(newparent);
  TouchTimes(fs, tx, source, p1, true);
  TouchTimes(fs, tx, source, p2, true);
  TouchTimes(fs, tx, source, src->object, false);
  if (dst->exists) TouchTimes(fs, tx, source, dst->object, false);
  if (dst->exists && !exchange) AddLinks(fs, tx, source, dst->object, dst_dir ? -2 : -1);
  if (p1 != p2) {
    if (src_dir) {
      AddLinks(fs, tx, source, p1, -1);
      if (!(dst_dir && !exchange)) AddLinks(fs, tx, source, p2, 1);
    }
    if (exchange && dst_dir) {
      AddLinks(fs, tx, source, p2, -1);
      AddLinks(fs, tx, source, p1, 1);
    }
  } else if (dst_dir && !exchange) {
    AddLinks(fs, tx, source, p1, -1);
  }
  MarkParent(fs, tx, parent);
  MarkParent(fs, tx, newparent);
  // The kernel moves its dentry, with the lifetime the old name was looked up with: others
  // must look the new name up again.
  InvalidateEntryLater(fs, newparent, newname);
  return reply(0);
}

}  // namespace ktmfs::fs::txops

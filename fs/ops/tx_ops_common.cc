#include "fs/ops/tx_ops_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <chrono>
#include <climits>
#include <cstring>
#include <functional>

#include "fs/fuse/invalidator.h"
#include "fs/mount/daemon_log.h"
#include "fs/ops/setid.h"
#include "fs/tx/apply_plan.h"
#include "fs/tx/mount_id.h"

namespace ktmfs::fs::txops {

int Errno(const Status& s) {
  const int err = s.code();
  if (err == ENOSPC || err == EDQUOT) {
    // A user past their share of a full filesystem, or every user of a full log, meets it at
    // every write. Each of the two is said once in a while, so neither hides the other.
    static LogThrottle log_full(std::chrono::seconds(10));
    static LogThrottle no_space(std::chrono::seconds(10));
    LogThrottle& throttle = s.IsLogFull() ? log_full : no_space;
    if (auto held = throttle.Take()) {
      DaemonLog(LogLevel::kError,
                s.message() + (*held == 0 ? ""
                                          : " (and " + std::to_string(*held) +
                                                " more ENOSPC or EDQUOT since the last one "
                                                "logged)"));
    }
    return err;
  }
  if (err != 0 && err != EBUSY && err != EEXIST && err != ENOENT && err != ENOTEMPTY &&
      err != ENODATA && err != ENOTDIR && err != EISDIR && err != EINVAL) {
    DaemonLog(LogLevel::kError, s.message());
  }
  return err;
}

Result<std::string> NodePath(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  if (inode->is_tx_version()) return fs.inodes().ViewPath(inode);
  if (inode->type == S_IFDIR) return ViewDir(fs, tx, inode);
  return Status::Error(ESTALE, "a committed node inside a transaction");
}

Result<ParentViewInfo> ParentView(Filesystem& fs, const TxGuard& tx, Inode* parent,
                                  const char* name) {
  if (parent->is_virtual_root()) return Status::Error(EPERM, "the virtual root is read-only");
  if (fs.IsHiddenName(parent, name)) return Status::Error(EPERM, "the state directory");
  if (!S_ISDIR(parent->type)) return Status::Error(ENOTDIR, "not a directory");
  auto view = ViewDir(fs, tx, parent);
  if (!view.ok()) return view.status();
  return ParentViewInfo{*view};
}

Requester RequesterOf(const Caller& caller) {
  const uid_t uid = caller.uid();
  const pid_t pid = caller.pid();
  auto groups = [caller] { return caller.Groups(); };
  // The caller's effective capabilities; without its pid (another pid namespace) or its
  // status, uid 0 stands for all of them, as it does for the kernel's root.
  auto caps = [uid, pid] {
    const uint64_t fallback = uid == 0 ? ~uint64_t{0} : 0;
    if (pid <= 0) return fallback;
    int fd = open(("/proc/" + std::to_string(pid) + "/status").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fallback;
    std::string text(8192, '\0');
    ssize_t n = read(fd, text.data(), text.size());
    close(fd);
    if (n <= 0) return fallback;
    text.resize(static_cast<size_t>(n));
    auto v = ParseCapEff(text);
    return v ? *v : fallback;
  };
  // Another user namespace's root shows every capability in its status, but they reach only
  // objects whose owner and group it maps (its root chown(f, -1, -1)'d anyone's set-user-ID
  // program into a plain one).
  std::function<bool(uid_t, gid_t)> covers;
  if (pid > 0 && !InDaemonUserNamespace(pid))
    covers = [pid](uid_t u, gid_t g) { return MapsIds(pid, u, g); };
  return Requester(uid, caller.gid(), groups, caps, std::move(covers));
}

struct stat ViewAttributes(Filesystem& fs, const TxGuard& tx, int source,
                           const fstx::ObjectId& object, struct stat st) {
  if (fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id())) {
    if (auto a = ov->Attributes(object)) {
      if (a->mode) st.st_mode = (st.st_mode & S_IFMT) | (*a->mode & 07777);
      if (a->uid) st.st_uid = *a->uid;
      if (a->gid) st.st_gid = *a->gid;
    }
  }
  return st;
}

bool ProtectedHardlinks() {
  int fd = open("/proc/sys/fs/protected_hardlinks", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;  // unknown: the stricter rule
  char c = '1';
  const bool got = read(fd, &c, 1) == 1;
  close(fd);
  return !got || c != '0';
}

namespace {

// Takes `key` for the transaction unless it holds it already (the common case for repeated
// writes: no path to compute). `taken`, if given, runs once the key is newly taken.
int Take(Filesystem& fs, const TxGuard& tx, int source, const fstx::LockKey& key,
         const std::function<std::string()>& path, const std::function<void()>& taken = {}) {
  auto& rm = fs.txs()->rm(source);
  if (rm.locks().TakeAgain(tx.id(), key)) return 0;
  if (rm.locks().Holder(key)) return EBUSY;
  Status s = rm.LockAt(tx.id(), key, path());
  if (!s.ok()) return s.code();
  if (taken) taken();
  return 0;
}

}  // namespace

int LockObjectId(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                 const std::string& backing_path) {
  if (object.kind != fstx::ObjectId::Kind::kExisting) return 0;
  // Newly taken: its handle, as LockObject takes it, from the name if it still holds the
  // object (a name relative to the source's root, which is the empty name).
  auto identify = [&] {
    const std::string& root = fs.layout().sources()[static_cast<size_t>(source)].path;
    const std::string path = backing_path.empty() ? root : root + "/" + backing_path;
    int fd = open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_dev == object.dev && st.st_ino == object.ino) {
      if (auto handle = fstx::ObjectHandle::Of(fd))
        fs.txs()->rm(source).Identify(tx.id(), object.dev, object.ino, std::move(*handle));
    }
    close(fd);
  };
  return Take(
      fs, tx, source, fstx::ObjectKey{object.dev, object.ino}, [&] { return backing_path; },
      identify);
}

namespace {

// Where an object's key is in the backing tree: where the transaction's ops name it, since
// that is where apply will look for it. The daemon's descriptor of a file with several names
// may have been opened through any of them (a version node handed over from an earlier
// transaction, say), so for such a file the name the transaction reached it by is looked up.
std::string LockPath(Filesystem& fs, const TxGuard& tx, const Inode* inode) {
  auto p = BackingPath(fs, inode);
  if (!p.ok()) return {};
  struct stat st;
  if (!inode->is_tx_version() || S_ISDIR(inode->type) || fstat(inode->Fd().get(), &st) != 0 ||
      st.st_nlink < 2) {
    return *p;
  }
  const std::string view = fs.inodes().ViewPath(inode);
  if (view.empty()) return *p;
  const auto slash = view.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : view.substr(0, slash);
  const std::string name = slash == std::string::npos ? view : view.substr(slash + 1);
  auto v = LookupView(fs, tx, inode->source_index, dir, name);
  if (v.ok() && v->exists && !v->backing_path.empty()) return v->backing_path;
  return *p;
}

}  // namespace

TakenLocks::TakenLocks(Filesystem& fs, const TxGuard& tx, int source)
    : fs_(fs), tx_(tx), source_(source), journal_(fs.txs()->rm(source).locks(), tx.id()) {}

TakenLocks::~TakenLocks() {
  if (!done_) GiveBack();
}

void TakenLocks::Stages(const Inode* inode) {
  assert(inode->source_index == source_ && ObjectOf(inode).kind == fstx::ObjectId::Kind::kExisting);
  staged_ = inode;
}

bool TakenLocks::GiveBack() {
  assert(!done_);
  done_ = true;
  if (staged_ == nullptr) {
    journal_.Undo();
    return false;
  }
  const fstx::LockKey key = fstx::ObjectKey{staged_->dev, staged_->ino};
  // Found before the table's lock is taken: the RM's own lock is taken before it elsewhere.
  fstx::TxStaging* staging = fs_.txs()->rm(source_).FindStaging(tx_.id());
  const std::string name = fstx::StagedNameForExisting(staged_->dev, staged_->ino);
  bool given = false;
  journal_.Undo([&](const fstx::LockKey& k) {
    if (k != key) return;
    given = true;
    if (staging != nullptr) staging->Drop(name);
  });
  return given;
}

int LockObject(Filesystem& fs, const TxGuard& tx, const Inode* inode) {
  const fstx::ObjectId object = ObjectOf(inode);
  if (object.kind != fstx::ObjectId::Kind::kExisting) return 0;
  const fstx::ObjectKey key{object.dev, object.ino};
  auto& rm = fs.txs()->rm(inode->source_index);
  // Held already, but reached now by another of its names: the key is held at that name too.
  // It may lie below a name another transaction holds, and while this transaction's ops name
  // the file there nobody may move or remove a directory above it.
  struct stat st;
  if (inode->is_tx_version() && !S_ISDIR(inode->type) && rm.locks().Holder(key) == tx.id() &&
      fstat(inode->Fd().get(), &st) == 0 && st.st_nlink > 1) {
    const std::string path = LockPath(fs, tx, inode);
    if (path.empty()) return 0;
    Status s = rm.LockAt(tx.id(), key, path);
    return s.ok() ? 0 : s.code();
  }
  // Newly taken: its handle as it is now, since nothing keeps its number from being reused
  // before the commit.
  auto identify = [&] {
    std::optional<fstx::ObjectHandle> handle = inode->handle;
    if (!handle) handle = fstx::ObjectHandle::Of(inode->Fd().get());
    if (handle) rm.Identify(tx.id(), object.dev, object.ino, std::move(*handle));
  };
  return Take(
      fs, tx, inode->source_index, key, [&] { return LockPath(fs, tx, inode); }, identify);
}

namespace {

// Apply renames between staging and the backing directory, and no rename crosses a mount.
// Natively a rename or link out of a mount fails with EXDEV and a mount point cannot be removed
// or renamed (EBUSY); here a transaction's create or removal inside another mount needs such a
// rename too. Refused before it is logged: at apply the commit would be acknowledged and then
// stay pending for ever.
int OffTheMount(Filesystem& fs, const TxGuard& tx, const Inode* node, const char* name,
                const char* what, int err) {
  static LogThrottle throttle(std::chrono::seconds(10));
  if (auto held = throttle.Take()) {
    auto path = BackingPath(fs, node);
    std::string shown = path.ok() ? *path : std::string("?");
    if (name != nullptr) shown = JoinPath(shown, name);
    DaemonLog(LogLevel::kNotice,
              "transaction " + tx.id().ToString() + ": " + shown + " " + what +
                  " in the backing directory: a transaction moves and removes names only on the "
                  "backing directory's own mount (" +
                  (err == EXDEV ? "EXDEV" : "EBUSY") + ")" +
                  (*held == 0 ? "" : "; " + std::to_string(*held) + " more since the last one"));
  }
  return err;
}

// 0, or why the entry `name` of `parent` cannot change in a transaction (see OffTheMount).
int EntryOnBackingMount(Filesystem& fs, const TxGuard& tx, const Inode* parent, const char* name) {
  const std::optional<uint64_t> root = fs.txs()->rm(parent->source_index).backing_mount();
  if (!root) return 0;
  NodeFd dir = parent->Fd();
  if (auto here = fstx::MountIdAt(dir.get(), ""); here && *here != *root)
    return OffTheMount(fs, tx, parent, name, "is inside another mount", EXDEV);
  if (auto child = fstx::MountIdAt(dir.get(), name); child && *child != *root)
    return OffTheMount(fs, tx, parent, name, "is a mount point", EBUSY);
  return 0;
}

}  // namespace

int ObjectOnBackingMount(Filesystem& fs, const TxGuard& tx, const Inode* object) {
  if (ObjectOf(object).kind != fstx::ObjectId::Kind::kExisting) return 0;
  const std::optional<uint64_t> root = fs.txs()->rm(object->source_index).backing_mount();
  if (!root) return 0;
  NodeFd fd = object->Fd();
  if (auto here = fstx::MountIdAt(fd.get(), ""); here && *here != *root)
    return OffTheMount(fs, tx, object, nullptr, "is inside another mount", EXDEV);
  return 0;
}

int LockEntry(Filesystem& fs, const TxGuard& tx, const Inode* parent, const char* name) {
  if (ObjectOf(parent).kind == fstx::ObjectId::Kind::kNew) return 0;  // only the tx sees it
  if (int err = EntryOnBackingMount(fs, tx, parent, name); err != 0) return err;
  return Take(fs, tx, parent->source_index, fstx::EntryKey{parent->dev, parent->ino, name}, [&] {
    auto p = BackingPath(fs, parent);
    return p.ok() ? JoinPath(*p, name) : std::string();
  });
}

int CheckNotGuarded(Filesystem& fs, const fstx::ObjectId& object) {
  if (object.kind != fstx::ObjectId::Kind::kExisting) return 0;
  return fs.layout().IsGuardedDir(static_cast<dev_t>(object.dev), static_cast<ino_t>(object.ino))
             ? EBUSY
             : 0;
}

int CheckDirMove(Filesystem& fs, const TxGuard& tx, int source, const std::string& backing_dir) {
  return fs.txs()->rm(source).locks().HeldUnder(backing_dir, tx.id()) ? EBUSY : 0;
}

void AddLinks(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
              int delta) {
  if (fstx::TxOverlay* ov = OverlayOfLogged(fs, tx, source)) ov->AddLinks(object, delta);
}

int StampUnlogged(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object) {
  fstx::TxOverlay* ov = fs.txs()->rm(source).OverlayFor(tx.id());
  // No op paid for this entry, and chown(f, -1, -1) needs no permission: without a charge, a
  // user could fill the daemon's memory with every file it sees.
  if (!ov->Stamps(object)) {
    Status s = fs.txs()->ChargeMemory(*tx, fstx::TxOverlay::kStampBytes);
    if (!s.ok()) return Errno(s);
  }
  TouchTimes(fs, tx, source, object, false);
  return 0;
}

void MarkParent(Filesystem& fs, const TxGuard& tx, Inode* parent) {
  if (ObjectOf(parent).kind == fstx::ObjectId::Kind::kExisting)
    fs.txs()->MarkTouched(tx.id(), parent->dev, parent->ino);
}

void InvalidateEntryLater(Filesystem& fs, Inode* parent, const char* name) {
  // With entry_timeout 0 (the default) no name outlives its next use: nothing to retract.
  if (fs.invalidator() != nullptr && fs.options().cache.entry_timeout > 0)
    fs.invalidator()->Entry(fs.inodes().NodeId(parent), name);
}

Result<fstx::StagedFile*> StagedFor(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  auto staging = fs.txs()->rm(inode->source_index).Staging(tx.id());
  if (!staging.ok()) return staging.status();
  const std::string name = fstx::StagedNameForExisting(inode->dev, inode->ino);
  if (fstx::StagedFile* f = (*staging)->Find(name)) {
    // The staged file keeps the committed one open (which keeps its number from naming another
    // object), or, past TxStaging::kCommittedOpen, its handle, which tells the two apart
    // (prepare checks it again: CheckApplyTargets).
    if (!f->StagesObject(inode->handle)) {
      auto path = BackingPath(fs, inode);
      return Status::Error(ESTALE, "transaction " + tx.id().ToString() + ": the file " +
                                       (path.ok() ? *path + " " : std::string()) +
                                       "(staged under " + name +
                                       ") was removed outside the mount, and its number now "
                                       "names another");
    }
    return f;
  }
  int fd = open(ProcPath(inode->Fd().get()).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "opening the committed file to stage it");
  fstx::CommittedFile committed{fd, inode->handle, inode->mount_fd};
  // Its name now, for the staged file's messages ("/" if it was opened again by handle).
  char shown[PATH_MAX + 1];
  if (ssize_t n = readlink(ProcPath(fd).c_str(), shown, PATH_MAX); n > 1)
    committed.shown.assign(shown, static_cast<size_t>(n));
  auto f = (*staging)->FileFor(name, committed, [&] { return fs.txs()->ChargeDescriptor(*tx); });
  close(fd);
  return f;
}

int Truncate(Filesystem& fs, const TxGuard& tx, Inode* inode, const std::string& path,
             uint64_t size) {
  TakenLocks taken(fs, tx, inode->source_index);
  if (int err = LockObject(fs, tx, inode); err != 0) return err;
  return TruncateLocked(fs, tx, inode, path, size, taken);
}

int TruncateLocked(Filesystem& fs, const TxGuard& tx, Inode* inode, const std::string& path,
                   uint64_t size, TakenLocks& taken) {
  const int source = inode->source_index;
  if (inode->object.kind == fstx::ObjectId::Kind::kNew) {
    // A new file's staged file is its content: no record, apply renames it into place.
    if (truncate(ProcPath(inode->Fd().get()).c_str(), static_cast<off_t>(size)) != 0) return errno;
  } else {
    fstx::Op op;
    op.kind = fstx::OpKind::kSetattr;
    op.object = ObjectOf(inode);
    op.path = path;
    op.set_mask = fstx::kSetSize;
    op.size = size;
    // Counted before anything is staged (past the owner's cap, ENOSPC, and nothing cut).
    auto prepaid = fs.txs()->ChargeFor(*tx, op);
    if (!prepaid.ok()) return Errno(prepaid.status());
    // Nor past the bound on a user's records: refused once the file is cut, the transaction
    // could no longer commit what it did before.
    if (Status room = fs.txs()->RoomInLog(*tx, source, op); !room.ok()) {
      fs.txs()->Refund(*tx, *prepaid);
      return Errno(room);
    }
    taken.Stages(inode);
    auto f = StagedFor(fs, tx, inode);
    Status s = f.ok() ? (*f)->Truncate(size) : f.status();
    if (s.ok()) {
      s = fs.txs()->LogOp(*tx, source, op, *prepaid);
      // The staged file is cut, the records do not say so, unless it goes with the lock: see
      // StagedFile::Unlogged.
      if (!s.ok() && !taken.GiveBack()) (*f)->Unlogged(s);
    } else {
      fs.txs()->Refund(*tx, *prepaid);
    }
    if (!s.ok()) return Errno(s);
  }
  taken.Keep();
  TouchTimes(fs, tx, source, ObjectOf(inode), true);
  return 0;
}

int ListViewPath(Filesystem& fs, const TxGuard& tx, int source, const std::string& view,
                 std::vector<TxDirEntry>* out) {
  fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id());
  std::optional<std::string> backing = view;
  if (ov != nullptr) {
    auto b = ov->BackingDir(view);
    if (!b.ok()) return b.status().code();
    backing = *b;
  }
  std::vector<std::string> names;
  int dfd = -1;
  if (backing) {
    dfd = OpenBeneath(fs, source, *backing, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) return errno;
    int listfd = dup(dfd);
    DIR* d = listfd < 0 ? nullptr : fdopendir(listfd);
    if (d == nullptr) {
      int err = errno;
      if (listfd >= 0) close(listfd);
      close(dfd);
      return err;
    }
    struct stat dst;
    fstat(dfd, &dst);
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      if (fs.layout().IsHidden(dst.st_dev, dst.st_ino, e->d_name)) continue;
      names.push_back(e->d_name);
    }
    closedir(d);
  }
  std::vector<fstx::OverlayDirEntry> entries;
  if (ov != nullptr) {
    auto r = ov->ReadDir(view, names);
    if (!r.ok()) {
      if (dfd >= 0) close(dfd);
      return r.status().code();
    }
    entries = std::move(*r);
  } else {
    for (auto& n : names)
      entries.push_back(
          {n, fstx::OverlayLookup{
                  fstx::OverlayLookup::Kind::kUnchanged, {}, 0, JoinPath(*backing, n)}});
  }
  // Inode numbers of "." and "..": programs skip entries numbered 0.
  ino_t self = 1, up = 1;
  struct stat dst;
  if (dfd >= 0 && fstat(dfd, &dst) == 0) self = dst.st_ino;
  if (dfd >= 0 && fstatat(dfd, "..", &dst, 0) == 0) up = dst.st_ino;
  out->push_back({".", self, S_IFDIR});
  out->push_back({"..", up, S_IFDIR});
  std::string sdir;
  for (const auto& e : entries) {
    struct stat st {};
    int r = -1;
    if (e.entry.kind == fstx::OverlayLookup::Kind::kUnchanged) {
      r = fstatat(dfd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW);
    } else if (e.entry.object.kind == fstx::ObjectId::Kind::kNew) {
      if (sdir.empty()) {
        auto s = StagingDir(fs, tx, source);
        if (s.ok()) sdir = *s;
      }
      std::string p = sdir + "/" + fstx::StagedNameForNew(e.entry.object.number);
      r = lstat(p.c_str(), &st);
    } else {
      int fd = OpenBeneath(fs, source, e.entry.backing_path, O_PATH);
      if (fd >= 0) {
        r = fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
        close(fd);
      }
    }
    if (r != 0) continue;  // gone meanwhile
    out->push_back({e.name, st.st_ino, static_cast<mode_t>(st.st_mode & S_IFMT)});
  }
  if (dfd >= 0) close(dfd);
  return 0;
}

int ListView(Filesystem& fs, const TxGuard& tx, Inode* dir, std::vector<TxDirEntry>* out) {
  auto view = ViewDir(fs, tx, dir);
  // A directory removed in the view, still open or a working directory, lists as empty, as
  // a removed directory does (not even "." and "..").
  if (!view.ok() && view.status().code() == ENOENT) return 0;
  if (!view.ok()) return view.status().code();
  int err = ListViewPath(fs, tx, dir->source_index, *view, out);
  if (err == ENOENT) {
    out->clear();
    return 0;
  }
  return err;
}

namespace {

// A change outside transactions is not logged: a commit whose apply is not durable yet must
// become so first, or a crash would have recovery redo it over this change.
int WaitAppliedDurable(Filesystem& fs, int source) {
  fstx::FsResourceManager& rm = fs.txs()->rm(source);
  if (!rm.AppliedPending()) return 0;
  Status s = rm.WaitAppliedDurable();
  if (s.ok()) return 0;
  static LogThrottle throttle(std::chrono::seconds(10));
  if (auto held = throttle.Take()) {
    DaemonLog(LogLevel::kError,
              "a change outside transactions failed (EIO): " + s.message() +
                  (*held == 0 ? "" : " (and " + std::to_string(*held) + " more since)"));
  }
  return EIO;
}

}  // namespace

namespace {

int ObjectHeld(Filesystem& fs, const Inode* inode) {
  auto& locks = fs.txs()->rm(inode->source_index).locks();
  if (locks.empty()) return 0;
  if (locks.Holder(
          fstx::ObjectKey{static_cast<uint64_t>(inode->dev), static_cast<uint64_t>(inode->ino)})) {
    return EBUSY;
  }
  // Below a directory a transaction removes or moves, the object is that transaction's: at the
  // name its descriptor holds, and at the names lookups found it by (a removed name or another
  // link), as far as they still name it.
  auto path = BackingPath(fs, inode);
  if (path.ok() && locks.NameHeldAbove(*path, Guid{})) return EBUSY;
  for (const std::string& name : NamesStillNaming(fs, inode))
    if (locks.NameHeldAbove(name, Guid{})) return EBUSY;
  return 0;
}

int EntryHeld(Filesystem& fs, const Inode* parent, const char* name) {
  auto& locks = fs.txs()->rm(parent->source_index).locks();
  if (locks.empty()) return 0;
  if (locks.Holder(fstx::EntryKey{parent->dev, parent->ino, name})) return EBUSY;
  // The object the name holds, if a transaction changes it.
  struct stat st;
  if (fstatat(parent->Fd().get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      locks.Holder(fstx::ObjectKey{st.st_dev, st.st_ino})) {
    return EBUSY;
  }
  auto dir = BackingPath(fs, parent);
  if (!dir.ok()) return 0;
  const std::string path = JoinPath(*dir, name);
  // A name inside a directory a transaction removes or moves is that transaction's; and a
  // directory removed, moved or replaced here would take along what transactions hold below.
  if (locks.NameHeldAbove(path, Guid{}) || locks.HeldUnder(path, Guid{})) return EBUSY;
  return 0;
}

}  // namespace

// The locks first, then the wait for applied commits: a commit queues its sync before it lets
// go of its locks, so a change that finds the object free then also finds that sync. In the
// other order a commit could queue its sync and let go in between, and the change would go
// ahead of the sync, which a crash would then redo over it.
int CheckNotHeld(Filesystem& fs, const Inode* inode) {
  if (fs.txs() == nullptr || inode->is_virtual_root() || inode->source_index < 0) return 0;
  if (int err = ObjectHeld(fs, inode); err != 0) return err;
  return WaitAppliedDurable(fs, inode->source_index);
}

int CheckEntryNotHeld(Filesystem& fs, const Inode* parent, const char* name) {
  if (fs.txs() == nullptr || parent->is_virtual_root() || parent->source_index < 0) return 0;
  if (int err = EntryHeld(fs, parent, name); err != 0) return err;
  return WaitAppliedDurable(fs, parent->source_index);
}

int CheckRenameNotHeld(Filesystem& fs, const Inode* parent, const char* name,
                       const Inode* newparent, const char* newname) {
  if (int err = CheckEntryNotHeld(fs, parent, name); err != 0) return err;
  return CheckEntryNotHeld(fs, newparent, newname);
}

}  // namespace ktmfs::fs::txops

#include "fs/ops/tx_view.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cassert>
#include <climits>
#include <cstring>

#include "fs/fuse/invalidator.h"
#include "fs/tx/apply_plan.h"

namespace ktmfs::fs {
std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

fstx::ObjectId ObjectOf(const Inode* inode) {
  if (inode->is_tx_version()) return inode->object;
  return fstx::ObjectId::Existing(inode->dev, inode->ino);
}

bool IsCreatedFile(const Inode* inode) {
  return inode->is_tx_version() && inode->object.kind == fstx::ObjectId::Kind::kNew &&
         inode->type == S_IFREG;
}

Route Classify(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  if (inode->is_tx_version()) {
    const Guid owner = inode->bound_tx();
    if (tx && tx.id() == owner) return Route::kTx;
    // Another transaction's version: stale for everyone while it lives, the object after. A
    // request inside a transaction holds its guard (the visibility lock, shared) and must not
    // wait for the other's end, which waits for that lock to apply: while it ends, its nodes
    // are stale to it. A request outside any holds nothing and waits for the end, as its
    // answer is then the committed object.
    if (fs.txs() != nullptr &&
        (tx ? fs.txs()->IsLive(owner) : static_cast<bool>(fs.txs()->EnterById(owner))))
      return Route::kStale;
    // Except a directory for a task inside a transaction (a shell whose working directory was
    // entered during an earlier one): served as committed, the names it creates there would
    // bypass its transaction and survive the rollback. Its own view of the directory is
    // reached by looking it up again.
    if (tx && S_ISDIR(inode->type)) return Route::kStale;
    return Route::kCommitted;
  }
  if (!tx || inode->is_virtual_root()) return Route::kCommitted;
  if (inode->type == S_IFDIR) return Route::kTx;
  return Route::kStale;
}

Route ClassifyRead(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  Route r = Classify(fs, tx, inode);
  if (r != Route::kStale || !tx || inode->is_tx_version()) return r;
  auto holder = fs.txs()
                    ->rm(inode->source_index)
                    .locks()
                    .Holder(fstx::ObjectKey{static_cast<uint64_t>(inode->dev),
                                            static_cast<uint64_t>(inode->ino)});
  return holder && *holder == tx.id() ? Route::kStale : Route::kCommitted;
}

int OpenBeneath(Filesystem& fs, int source, const std::string& rel, int flags) {
  Inode* root = fs.SourceRoot(source);
  if (rel.empty())
    return openat(root->Fd().get(), ".", flags == O_PATH ? O_PATH | O_DIRECTORY : flags);
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = syscall(SYS_openat2, root->Fd().get(), rel.c_str(), &how, sizeof how);
  return fd < 0 ? -1 : static_cast<int>(fd);
}

Result<std::string> BackingPath(Filesystem& fs, const Inode* inode) {
  char buf[PATH_MAX + 1];
  ssize_t n = readlink(ProcPath(inode->Fd().get()).c_str(), buf, PATH_MAX);
  if (n < 0) return Status::Error(errno, "backing path of a node");
  std::string path(buf, static_cast<size_t>(n));
  const std::string& root = fs.layout().sources()[static_cast<size_t>(inode->source_index)].path;
  if (path == root) return std::string();
  if (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
      path[root.size()] == '/') {
    return path.substr(root.size() + 1);
  }
  // A file opened again by handle (InodeTable) after the kernel dropped its names has a
  // descriptor with no path ("/"); a directory always has one. The names lookups found it by
  // say where it is, as far as they still name it.
  if (!S_ISDIR(inode->type)) {
    auto names = NamesStillNaming(fs, inode);
    if (!names.empty()) return names.front();
  }
  return Status::Error(ESTALE, "object no longer in its backing directory: " + path);
}

std::vector<std::string> NamesStillNaming(Filesystem& fs, const Inode* inode) {
  const int root_fd = fs.SourceRoot(inode->source_index)->Fd().get();  // a root's: never closed
  std::vector<std::string> out;
  for (std::string& name : inode->LookedUpAs()) {
    struct stat st;
    if (fstatat(root_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == inode->dev &&
        st.st_ino == inode->ino)
      out.push_back(std::move(name));
  }
  return out;
}

Result<std::string> ViewDir(Filesystem& fs, const TxGuard& tx, Inode* dir) {
  if (dir->is_tx_version()) return fs.inodes().ViewPath(dir);
  auto backing = BackingPath(fs, dir);
  if (!backing.ok()) return backing.status();
  fstx::TxOverlay* ov = fs.txs()->rm(dir->source_index).Overlay(tx.id());
  if (ov == nullptr) return backing;
  return ov->ViewPath(*backing);
}

Result<std::string> StagingDir(Filesystem& fs, const TxGuard& tx, int source) {
  fstx::TxStaging* staging = fs.txs()->rm(source).FindStaging(tx.id());
  if (staging == nullptr) return Status::Error(ENOENT, "no staging for the transaction");
  return staging->dir();
}

Result<ViewEntry> LookupView(Filesystem& fs, const TxGuard& tx, int source, const std::string& dir,
                             const std::string& name) {
  ViewEntry v;
  fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id());
  std::string backing_path;
  if (ov != nullptr) {
    auto l = ov->Lookup(dir, name);
    if (!l.ok()) return l.status();
    switch (l->kind) {
      case fstx::OverlayLookup::Kind::kRemoved:
        return v;
      case fstx::OverlayLookup::Kind::kUnchanged:
        backing_path = l->backing_path;
        break;
      case fstx::OverlayLookup::Kind::kEntry:
        if (l->object.kind == fstx::ObjectId::Kind::kNew) {
          auto sdir = StagingDir(fs, tx, source);
          if (!sdir.ok()) return sdir.status();
          std::string p = *sdir + "/" + fstx::StagedNameForNew(l->object.number);
          if (lstat(p.c_str(), &v.st) != 0) return Status::FromErrno(errno, "staged object " + p);
          v.exists = true;
          v.is_new = true;
          v.object = l->object;
          return v;
        }
        backing_path = l->backing_path;
        break;
    }
  } else {
    backing_path = JoinPath(dir, name);
  }
  int fd = OpenBeneath(fs, source, backing_path, O_PATH);
  if (fd < 0) {
    if (errno == ENOENT) return v;
    return Status::Error(errno, "lookup of " + backing_path);
  }
  int r = fstatat(fd, "", &v.st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  int err = errno;
  close(fd);
  if (r != 0) return Status::Error(err, "stat of " + backing_path);
  if (fs.layout().IsHiddenObject(v.st.st_dev, v.st.st_ino)) return v;
  v.exists = true;
  v.object = fstx::ObjectId::Existing(v.st.st_dev, v.st.st_ino);
  v.backing_path = backing_path;
  return v;
}

int TxLookupEntry(Filesystem& fs, const TxGuard& tx, int source, const std::string& dir,
                  const std::string& name, fuse_entry_param* e) {
  auto v = LookupView(fs, tx, source, dir, name);
  if (!v.ok()) return v.status().code();
  if (!v->exists) return ENOENT;
  int fd;
  if (v->is_new) {
    auto sdir = StagingDir(fs, tx, source);
    if (!sdir.ok()) return sdir.status().code();
    const std::string staged = *sdir + "/" + fstx::StagedNameForNew(v->object.number);
    fd = fs.inodes().OpenMakingRoom(
        [&] { return open(staged.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC); });
  } else {
    fd = fs.inodes().OpenMakingRoom(
        [&] { return OpenBeneath(fs, source, v->backing_path, O_PATH); });
  }
  if (fd < 0) return errno;
  struct stat st;
  if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || st.st_ino != v->st.st_ino) {
    close(fd);
    return ESTALE;  // changed under us; the kernel retries
  }
  // Directories get version nodes too: the kernel keeps one dentry per directory inode, and a
  // rename inside the transaction moves it; with the committed node that move would outlive a
  // rollback (and the kernel then refuses to put the directory back, ESTALE). A working
  // directory entered before the transaction keeps its committed node (see Classify).
  bool handed_over = false;
  Inode* inode = fs.inodes().AcquireTx(tx.id(), v->object, fd, st, source, JoinPath(dir, name),
                                       fs.invalidator() != nullptr ? &handed_over : nullptr);
  // Where the file is, should its descriptor be opened again by handle (see BackingPath).
  if (!v->is_new && !S_ISDIR(st.st_mode)) inode->NoteLookedUpAs(v->backing_path);
  // What the kernel cached for a handed-over node was an ended transaction's view. The
  // transaction's opens drop the node's pages anyway (SetTxOpenReply) and its attributes are never
  // cached, but nothing of that view should outlive the hand-over. No handle is open on the node
  // and a lookup holds none of its locks, so this cannot wait on the request.
  if (handed_over) fs.invalidator()->InodeNow(fs.inodes().NodeId(inode));
  std::memset(e, 0, sizeof *e);
  int err = TxStat(fs, tx, inode, &e->attr);
  if (err != 0) {
    fs.inodes().Forget(inode, 1);
    return err;
  }
  e->ino = fs.inodes().NodeId(inode);
  e->generation = inode->generation;
  e->attr_timeout = 0;
  e->entry_timeout = 0;
  return 0;
}

int TxStat(Filesystem& fs, const TxGuard& tx, Inode* inode, struct stat* st) {
  if (inode->is_virtual_root()) return fs.Stat(inode, st);
  // A file a commit's apply still writes in place, served to this request from staging: the
  // attributes it has once applied, and this view's changes over them, as over the file's own.
  if (const fstx::ServedObject* served = tx.ServedFrom(GateKey(inode))) {
    *st = served->Attributes();
  } else if (int err = fs.Stat(inode, st); err != 0) {
    return err;
  }
  const fstx::ObjectId object = ObjectOf(inode);
  // The kernel may write a created file's staged file without the daemon (fs/ops/passthrough.h).
  const bool staged_content = IsCreatedFile(inode);
  const int source = inode->source_index;
  fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id());
  if (ov != nullptr)
    fstx::ShowViewAttributes(st, ov->Attributes(object), ov->Stamps(object), staged_content);
  return 0;
}

double ViewAttrTimeout(Filesystem& fs, const TxGuard& tx, const Inode* inode) {
  // A version node's view changes where the kernel does not see it (another transaction's
  // commit). A committed file may be changed through a descriptor opened before the
  // transaction, which leaves no mark on it. A committed directory the transaction has not
  // changed shows everyone the same: it is kept as long as for anyone, and a transaction that
  // changes it marks it touched, which drops what the kernel kept and serves it with zero
  // timeouts from then on (UnshareCommittedNode). A path walked from a directory opened
  // before the transaction then costs no GETATTR of that directory per name.
  if (inode->is_tx_version() || inode->is_virtual_root() || !S_ISDIR(inode->type)) return 0;
  if (tx.ServedFrom(GateKey(inode)) != nullptr) return 0;
  const fstx::ObjectId object = ObjectOf(inode);
  if (const fstx::TxOverlay* ov = fs.txs()->rm(inode->source_index).Overlay(tx.id()))
    if (ov->Attributes(object) || ov->Stamps(object)) return 0;
  return fs.AttrTimeout(inode);
}

fstx::TxOverlay* OverlayOfLogged(Filesystem& fs, const TxGuard& tx, int source) {
  fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id());
  assert(ov != nullptr && "an op logged here first; else StampUnlogged");
  return ov;
}

namespace {

// A directory a program entered before the transaction is a committed node shared by every
// view, whose attributes the kernel may keep from a lookup made before the transaction (for a
// day, by default). Once this transaction's view differs, everyone is served the directory with
// zero timeouts while it lives (touched), and what the kernel kept is dropped now, before the
// change is answered: the change may have come through the transaction's own version node,
// which the kernel does not relate to the shared one (regress tx/076). With names cached
// (a positive entry_timeout) a file's committed node is reached from inside the transaction
// too, through a name the kernel kept: another link of a file it wrote showed the size from
// before (txcheck, seed 7001). Once touched, no node of the object is cached any more.
void UnshareCommittedNode(Filesystem& fs, const TxGuard& tx, const fstx::ObjectId& object) {
  if (object.kind != fstx::ObjectId::Kind::kExisting) return;
  const dev_t dev = static_cast<dev_t>(object.dev);
  const ino_t ino = static_cast<ino_t>(object.ino);
  auto node = fs.inodes().FindDirectoryNode(dev, ino);
  if (!node) {
    if (fs.options().cache.entry_timeout <= 0 || fs.txs()->IsTouched(dev, ino)) return;
    node = fs.inodes().FindNode(dev, ino);
    if (!node) return;
  }
  fs.txs()->MarkTouched(tx.id(), dev, ino);
  if (fs.invalidator() != nullptr) fs.invalidator()->AttributesNow(*node);
}

}  // namespace

void TouchTimes(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                bool data) {
  fstx::TxOverlay* ov = OverlayOfLogged(fs, tx, source);
  if (ov == nullptr) return;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  ov->Touch(object, now, data);
  UnshareCommittedNode(fs, tx, object);
}

}  // namespace ktmfs::fs

#include "fs/ops/filesystem.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>

#include "fs/fuse/invalidator.h"
#include "fs/fuse/kernel_channel.h"
#include "fs/mount/daemon_log.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_view.h"
#include "fs/tx/object_handle.h"

namespace ktmfs::fs {

// How long a commit waits for the RELEASE of files closed just before it (BeforeTxEnd): over
// FUSE's io_uring, with two CPUs busy and a sanitized daemon, the longest seen was 8 ms.
constexpr std::chrono::milliseconds kReleaseWait{200};

ProcPath::ProcPath(int fd) {
  std::snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
}

Filesystem::Filesystem(Options options, Layout layout)
    : options_(std::move(options)), layout_(std::move(layout)), read_only_(options_.mountpoint) {
  clock_gettime(CLOCK_REALTIME, &mounted_at_);
}

Status Filesystem::OpenRoots() {
  const auto& sources = layout_.sources();
  for (size_t i = 0; i < sources.size(); i++) {
    int fd = open(sources[i].path.c_str(), O_PATH | O_DIRECTORY);
    if (fd < 0) {
      return Status::FromErrno(errno, "source " + sources[i].path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
      int err = errno;
      close(fd);
      return Status::FromErrno(err, "source " + sources[i].path);
    }
    auto inode = std::make_unique<Inode>();
    inode->fd_slot->fd = fd;
    inode->dev = st.st_dev;
    inode->ino = st.st_ino;
    inode->type = S_IFDIR;
    inode->source_index = static_cast<int>(i);
    source_roots_.push_back(inodes_.AddPinned(std::move(inode)));
    // open_by_handle_at(2) wants a descriptor on the filesystem that is not O_PATH.
    int mount_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = errno, mount_id = -1;
    if (mount_fd >= 0 && fstx::HandlesWork(mount_fd, &mount_id, &err)) {
      inodes_.CloseUnusedDescriptors(mount_id, mount_fd, options_.node_descriptors);
    } else {
      if (mount_fd >= 0) close(mount_fd);
      DaemonLog(LogLevel::kNotice,
                "source " + sources[i].path +
                    ": every object the kernel knows keeps a descriptor "
                    "open in the daemon, since objects cannot be opened by handle (" +
                    std::strerror(err) + ")");
    }
  }
  if (layout_.virtual_root()) {
    auto root = std::make_unique<Inode>();
    root->kind = Inode::Kind::kVirtualRoot;
    root->type = S_IFDIR;
    root->ino = FUSE_ROOT_ID;
    inodes_.SetRoot(inodes_.AddPinned(std::move(root)));
  } else {
    inodes_.SetRoot(source_roots_[0]);
  }
  return Status::Ok();
}

void Filesystem::VirtualRootAttr(struct stat* st) const {
  std::memset(st, 0, sizeof *st);
  st->st_ino = FUSE_ROOT_ID;
  // Read-only names: the sources are fixed by the mount command.
  st->st_mode = S_IFDIR | 0555;
  st->st_nlink = 2 + source_roots_.size();
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_blksize = 4096;
  st->st_atim = st->st_mtim = st->st_ctim = mounted_at_;
}

int Filesystem::Stat(Inode* inode, struct stat* st) const {
  if (inode->is_virtual_root()) {
    VirtualRootAttr(st);
    return 0;
  }
  if (fstatat(inode->Fd().get(), "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  return 0;
}

void Filesystem::BeforeTxEnd(const Guid& tx, bool commit) {
  // Worth waiting for only where another worker can serve the RELEASE meanwhile.
  if (commit && !options_.single_thread) {
    // Readers take no locks: an object the transaction holds is one it changed, and only such
    // a file may be replaced.
    auto changed = [this, &tx](int source, const fstx::ObjectId& id) {
      return source >= 0 && txs_ != nullptr &&
             txs_->rm(source).locks().Holder(fstx::ObjectKey{id.dev, id.ino}) == tx;
    };
    if (size_t left = inodes_.AwaitFlushedReleased(tx, kReleaseWait, changed); left != 0) {
      DaemonLog(
          LogLevel::kInfo,
          "transaction " + tx.ToString() + ": " + std::to_string(left) +
              " file(s) closed before its commit but not released " +
              std::to_string(kReleaseWait.count()) +
              " ms later (still open by another descriptor, or the kernel's RELEASE is that late), "
              "so written in place");
    }
  }
  if (invalidator_ == nullptr) return;
  // Dropping a version node's pages writes its dirty ones back first, through the
  // transaction's own handles, so mmap writes are part of it.
  for (fuse_ino_t n : inodes_.VersionNodes(tx))
    invalidator_->InodeNow(n);
}

void Filesystem::OnLetIn(const Guid& tx, int source, const std::vector<fstx::ObjectId>& objects) {
  if (invalidator_ == nullptr) return;
  // A descriptor kept from before the commit would otherwise go on reading the old size and
  // pages, mixed with the new bytes it is served where it has no page, until the copy is done
  // (OnTxEnded drops them again then). From the invalidator's thread: dropping pages waits for
  // reads in flight, which are served meanwhile and so end.
  for (const fstx::ObjectId& o : objects) {
    if (o.kind != fstx::ObjectId::Kind::kExisting) continue;
    const dev_t dev = static_cast<dev_t>(o.dev);
    const ino_t ino = static_cast<ino_t>(o.ino);
    if (auto n = inodes_.FindNode(dev, ino)) invalidator_->Inode(*n);
    for (fuse_ino_t v : inodes_.OtherVersionNodes(tx, source, dev, ino))
      invalidator_->Inode(v);
  }
}

void Filesystem::OnTxEnded(const EndedTx& e) {
  if (invalidator_ == nullptr) return;
  for (fuse_ino_t n : inodes_.VersionNodes(e.id))
    invalidator_->InodeNow(n);
  inodes_.MarkTxEnded(e.id);
  for (const auto& o : e.objects) {
    if (o.kind != fstx::ObjectId::Kind::kExisting) continue;
    const dev_t dev = static_cast<dev_t>(o.dev);
    const ino_t ino = static_cast<ino_t>(o.ino);
    // Other transactions read the object as committed, through nodes of their own: their
    // pages and attributes from before the commit would outlive it (a reader that opens the
    // file afresh keeps its cached pages once the commit has been told), and so would an ended
    // one's, which its tasks go on using as a plain node.
    if (e.committed) {
      for (fuse_ino_t v : inodes_.OtherVersionNodes(e.id, e.source, dev, ino))
        invalidator_->InodeNow(v);
    }
    // The commit may have set xattrs (capabilities among them) on the object.
    auto n = inodes_.NoteChanged(dev, ino);
    if (!n) continue;
    // The node may be gone by now (a FORGET): the kernel ignores a node it no longer knows.
    invalidator_->InodeNow(n->node);
    // The kernel keeps one dentry per directory node: one the commit moved may still sit at
    // its old name, and the kernel could not place it at the new one inside a later rename
    // (ESTALE). A new node for it avoids retracting the old name, which would wait for the
    // directory's lock (see ktmfs(8), entry_timeout).
    // With the writeback cache the kernel trusts its own size of a file for as long as it keeps
    // the inode, whatever the daemon says: a file the commit wrote in place (one with other
    // links, or open for writing) kept its old size for every later open, and an append then
    // landed inside the committed data. A new node is a new inode, which asks.
    if (e.committed && (n->dir || options_.cache.writeback)) inodes_.Retire(dev, ino);
  }
  // The directories whose names changed: their attributes at once (no lock needed). With a
  // positive entry or negative timeout also the names (a created name may be cached as absent),
  // through the invalidator's thread (they need the directory's lock, which the request that
  // ended the transaction may hold).
  const bool names_cached = options_.cache.entry_timeout > 0 || options_.cache.negative_timeout > 0;
  std::set<fuse_ino_t> dirs;
  for (const auto& [dir, name] : e.entries) {
    int fd = OpenBeneath(*this, e.source, dir, O_PATH);
    if (fd < 0) continue;
    struct stat st;
    if (fstat(fd, &st) == 0) {
      if (auto n = inodes_.FindNode(st.st_dev, st.st_ino)) {
        if (dirs.insert(*n).second) invalidator_->InodeNow(*n);
        if (names_cached) invalidator_->Entry(*n, name);
      }
    }
    close(fd);
  }
}

TxGuard Filesystem::EnterTx(fuse_req_t req) {
  if (txs_ == nullptr) return {};
  const fuse_ctx* c = fuse_req_ctx(req);
  TxGuard tx = txs_->Enter(c->pid);
  // A task acts inside a user's transaction only with that user's authority. A set-id program
  // run by a bound shell is bound too (tree scope) but runs with ids its owner could not
  // ptrace, so it could not have been bound on its own (TaskBindings::Bind): its changes stay
  // outside, or the owner could roll back what a setuid-root helper did for it. A set-group-ID
  // program too: a user could otherwise undo what a group's helper wrote with the group's
  // rights, which the user lacks. Neither id changes otherwise without privilege.
  if (tx && tx->owner != 0 && (c->uid != tx->owner || c->gid != tx->owner_gid)) return {};
  return tx;
}

double Filesystem::AttrTimeout(const Inode* inode) const {
  if (inode->is_tx_version()) return 0;
  if (txs_ != nullptr && txs_->IsTouched(inode->dev, inode->ino)) return 0;
  return options_.cache.attr_timeout;
}

double Filesystem::EntryTimeout(const Inode* inode) const {
  if (inode->is_tx_version()) return 0;
  if (txs_ != nullptr && txs_->IsTouched(inode->dev, inode->ino)) return 0;
  return options_.cache.entry_timeout;
}

int Filesystem::FillEntry(Inode* inode, fuse_entry_param* e) {
  std::memset(e, 0, sizeof *e);
  int err = Stat(inode, &e->attr);
  if (err != 0) return err;
  e->ino = inodes_.NodeId(inode);
  e->generation = inode == inodes_.root() ? 0 : inode->generation;
  e->attr_timeout = AttrTimeout(inode);
  e->entry_timeout = EntryTimeout(inode);
  return 0;
}

fstx::VisibilityGate::Key GateKey(const Inode* inode) {
  return {inode->dev, inode->ino};
}

fstx::VisibilityGate::Pass Filesystem::ReadingCommitted(const Inode* inode) const {
  if (txs_ == nullptr) return {};
  return txs_->gate().EnterFor(GateKey(inode));
}

fstx::VisibilityGate::Pass Filesystem::ReadingCommittedOrServed(const Inode* inode) const {
  if (txs_ == nullptr) return {};
  return txs_->gate().EnterOrServe(GateKey(inode));
}

const fstx::ServedObject* Filesystem::ServedFrom(const fstx::VisibilityGate::Pass& pass,
                                                 const Inode* inode) const {
  return pass.ServedFrom(GateKey(inode));
}

bool Filesystem::ReadingCommittedEntry(fstx::VisibilityGate::Pass& pass, fuse_entry_param* e,
                                       fstx::VisibilityGate::Key* closed) {
  if (txs_ == nullptr) return true;
  Inode* child = Get(e->ino);
  if (!pass.AddOrServe(GateKey(child))) {
    *closed = GateKey(child);
    return false;
  }
  if (const fstx::ServedObject* served = ServedFrom(pass, child)) {
    e->attr = served->Attributes();
    e->attr_timeout = AttrTimeout(child);
  } else if (pass.ApplyOverlapped()) {
    fuse_entry_param fresh;
    // Removed meanwhile: the lookup's answer stands, as for any lookup racing with an unlink.
    if (FillEntry(child, &fresh) == 0) {
      e->attr = fresh.attr;
      e->attr_timeout = fresh.attr_timeout;
    }
  }
  return true;
}

fstx::VisibilityGate::Pass Filesystem::ReadingInTx(const Inode* a, const Inode* b,
                                                   bool served) const {
  if (txs_ == nullptr || !txs_->gate().AnyClosed()) return {};
  fstx::VisibilityGate& gate = txs_->gate();
  for (;;) {
    fstx::VisibilityGate::Pass pass = gate.Enter();
    std::optional<fstx::VisibilityGate::Key> closed;
    for (const Inode* n : {a, b}) {
      if (n == nullptr || n->is_virtual_root() || closed) continue;
      const fstx::VisibilityGate::Key key = GateKey(n);
      if (!(served ? pass.AddOrServe(key) : pass.Add(key))) closed = key;
    }
    if (!closed) return pass;
    pass.Release();
    if (served) {
      gate.AwaitOrServed(*closed);
    } else {
      gate.Await(*closed);
    }
  }
}

Filesystem::TxLook Filesystem::LookAgainInTx(fstx::VisibilityGate::Pass& pass,
                                             const Inode* child) const {
  // An inactive pass: nothing was closed when the request began, so nothing can be now.
  if (!pass.active() || child->is_virtual_root()) return TxLook::kAnswer;
  const fstx::VisibilityGate::Key key = GateKey(child);
  // Counted by an earlier look, so this one read it through the pass.
  if (pass.Counts(key)) return TxLook::kAnswer;
  if (!pass.AddOrServe(key)) return TxLook::kWait;
  // Served: the look read the file itself, which apply is writing. Open: it may have been
  // opened after the look read it, with a change the look saw half of.
  return pass.ServedFrom(key) != nullptr || pass.OpenedSince() ? TxLook::kLookAgain
                                                               : TxLook::kAnswer;
}

void Filesystem::AwaitApply(fstx::VisibilityGate::Key key) {
  if (txs_ != nullptr) txs_->gate().Await(key);
}

void Filesystem::AwaitApplyOrServed(fstx::VisibilityGate::Key key) {
  if (txs_ != nullptr) txs_->gate().AwaitOrServed(key);
}

int Filesystem::Lookup(Inode* parent, const char* name, fuse_entry_param* e) {
  if (parent->is_virtual_root()) {
    if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) {
      inodes_.Ref(parent);
      return FillEntry(parent, e);
    }
    const auto& sources = layout_.sources();
    for (size_t i = 0; i < sources.size(); i++) {
      if (sources[i].name == name) {
        inodes_.Ref(source_roots_[i]);
        return FillEntry(source_roots_[i], e);
      }
    }
    return ENOENT;
  }
  if (std::strcmp(name, "..") == 0 && parent->pinned) {
    // A root's parent is the mount's root: no walk leads above a backing directory.
    Inode* root = inodes_.root();
    inodes_.Ref(root);
    return FillEntry(root, e);
  }
  if (IsHiddenName(parent, name)) return ENOENT;
  std::memset(e, 0, sizeof *e);
  // With names not cached (entry_timeout 0) every path walk looks up objects the kernel already
  // holds: for those one fstatat answers, without a descriptor to open and close.
  if (fstatat(parent->Fd().get(), name, &e->attr, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (layout_.IsHiddenObject(e->attr.st_dev, e->attr.st_ino)) return ENOENT;
  Inode* inode = inodes_.AcquireKnown(e->attr);
  if (inode == nullptr) {
    int fd = inodes_.OpenMakingRoom(
        [&] { return openat(parent->Fd().get(), name, O_PATH | O_NOFOLLOW | O_CLOEXEC); });
    if (fd < 0) return errno;
    // The name may have changed since the fstatat: describe what was opened.
    if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      int err = errno;
      close(fd);
      return err;
    }
    if (layout_.IsHiddenObject(e->attr.st_dev, e->attr.st_ino)) {
      close(fd);
      return ENOENT;
    }
    inode = inodes_.Acquire(fd, e->attr, parent->source_index);
  }
  // While transactions hold locks, a plain change to a file must be checked at every name the
  // kernel reaches it by (txops::CheckNotHeld), not only at the name its descriptor was opened
  // by, which may be gone or be another link.
  // (A name is kept relative to its source's root, so only names in the file's own source.)
  if (!S_ISDIR(e->attr.st_mode) && txs_ != nullptr && parent->source_index >= 0 &&
      parent->source_index == inode->source_index &&
      !txs_->rm(parent->source_index).locks().empty()) {
    if (auto dir = BackingPath(*this, parent); dir.ok())
      inode->NoteLookedUpAs(JoinPath(*dir, name));
  }
  e->ino = inodes_.NodeId(inode);
  e->generation = inode == inodes_.root() ? 0 : inode->generation;
  e->attr_timeout = AttrTimeout(inode);
  // A name a transaction changed in this directory may differ for its own tasks.
  e->entry_timeout =
      txs_ != nullptr && txs_->IsTouched(parent->dev, parent->ino) ? 0 : EntryTimeout(inode);
  return 0;
}

Reply WriteDone(Filesystem& fs, fuse_ino_t node, const fuse_file_info* fi, off_t off, size_t n) {
  // fi->flags of a WRITE are the file's open flags; writepage marks the kernel's own write-back
  // of cached pages, which must keep them.
  Invalidator* inval = fs.direct_write_invalidator();
  if (inval != nullptr && (fi->flags & O_DIRECT) && !fi->writepage && n > 0) {
    // An O_APPEND write lands at the end, wherever the kernel thought that was: drop all after.
    const off_t len = (fi->flags & O_APPEND) ? 0 : static_cast<off_t>(n);
    // Long enough for a readahead's READ on another worker; a single-threaded loop cannot
    // serve one while this request waits.
    const auto wait = std::chrono::milliseconds(fs.options().single_thread ? 0 : 250);
    (void)inval->PagesWithin(node, off, len, wait);
  }
  return Reply::Written(n);
}

int DropSetidOnWrite(const Caller& who, Filesystem& fs, fuse_ino_t node, int fd,
                     const fuse_file_info* fi) {
  if (fi->writepage || KernelChannel::CurrentWriterKeepsSetid()) return 0;
  bool cleared = false;
  int err = DropSetidBeforeWrite(who, fd, &cleared);
  if (cleared && fs.invalidator() != nullptr) fs.invalidator()->Attributes(node);
  return err;
}

bool Filesystem::IsGuardedName(const Inode* parent, const char* name) const {
  if (!layout_.has_guarded_dirs() || parent->is_virtual_root()) return false;
  struct stat st;
  NodeFd dir = parent->Fd();
  return fstatat(dir.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
         layout_.IsGuardedDir(st.st_dev, st.st_ino);
}

}  // namespace ktmfs::fs

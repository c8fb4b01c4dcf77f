#include "fs/fuse/inode_table.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <climits>

namespace ktmfs::fs {

NodeFdSlot::~NodeFdSlot() {
  if (fd >= 0) close(fd);
}

NodeFd::~NodeFd() {
  if (counted_ == nullptr) return;
  // Callers read errno after the call this descriptor served, often once this is gone.
  const int saved = errno;
  {
    std::lock_guard l(counted_->mu);
    assert(counted_->users > 0);
    --counted_->users;
  }
  errno = saved;
}

NodeFd Inode::Fd() const {
  NodeFdSlot& slot = *fd_slot;
  if (table == nullptr) return NodeFd(nullptr, slot.fd);
  bool reopened = false;
  int fd = -1;
  {
    std::lock_guard l(slot.mu);
    if (slot.fd >= 0) {
      ++slot.users;
      fd = slot.fd;
    }
  }
  if (fd < 0) {
    // Opened with no lock held: making room takes the table's lock, then other nodes'.
    int opened = table->OpenMakingRoom(
        [this] { return handle->Open(mount_fd, O_PATH | O_NOFOLLOW | O_CLOEXEC); });
    if (opened < 0) return NodeFd(nullptr, -1);
    std::lock_guard l(slot.mu);
    if (slot.fd >= 0) {
      close(opened);  // another use opened it meanwhile
    } else {
      slot.fd = opened;
      reopened = true;
    }
    ++slot.users;
    fd = slot.fd;
  }
  fd_used.store(true, std::memory_order_relaxed);
  if (reopened) table->Reopened(this);
  return NodeFd(fd_slot, fd);
}

void Inode::NoteLookedUpAs(const std::string& path) {
  // Enough for the links one file usually has; the oldest go first, and a stale one costs
  // only a stat in the check.
  constexpr size_t kKept = 4;
  std::lock_guard l(names_mu);
  auto it = std::find(looked_up_as.begin(), looked_up_as.end(), path);
  if (it != looked_up_as.end()) looked_up_as.erase(it);
  if (looked_up_as.size() == kKept) looked_up_as.erase(looked_up_as.begin());
  looked_up_as.push_back(path);
}

std::vector<std::string> Inode::LookedUpAs() const {
  std::lock_guard l(names_mu);
  return looked_up_as;
}

Inode* InodeTable::AddPinned(std::unique_ptr<Inode> inode) {
  std::lock_guard lock(mu_);
  inode->pinned = true;
  inode->nlookup = 1;
  inode->generation = next_generation_++;
  Inode* raw = inode.get();
  if (inode->is_virtual_root()) {
    virtual_root_ = std::move(inode);
  } else {
    by_key_[Key{raw->dev, raw->ino}] = std::move(inode);
  }
  return raw;
}

std::unique_ptr<Inode> InodeTable::NewInode(int fd, const struct stat& st, int source_index) {
  mu_.AssertHeld();
  auto inode = std::make_unique<Inode>();
  inode->fd_slot->fd = fd;
  inode->dev = st.st_dev;
  inode->ino = st.st_ino;
  inode->type = st.st_mode & S_IFMT;
  inode->generation = next_generation_++;
  inode->nlookup = 1;
  inode->source_index = source_index;
  if (!handle_mounts_.empty()) {
    // Objects on other mounts (a bind mount inside a source) keep their descriptors.
    auto handle = fstx::ObjectHandle::Of(fd);
    for (const auto& [mount_id, mount_fd] : handle_mounts_) {
      if (!handle || handle->mount_id() != mount_id) continue;
      inode->handle = std::move(handle);
      inode->table = this;
      inode->mount_fd = mount_fd;
      inode->fd_used.store(true, std::memory_order_relaxed);  // its lookup is using it
      List(inode.get());
      TrimDescriptors();
      break;
    }
  }
  return inode;
}

InodeTable::~InodeTable() {
  // No request runs any more, so no node opens its object by handle again.
  for (const auto& m : handle_mounts_)
    close(m.second);
}

void InodeTable::CloseUnusedDescriptors(int mount_id, int mount_fd, size_t budget) {
  std::lock_guard lock(mu_);
  handle_mounts_.emplace_back(mount_id, mount_fd);
  fixed_budget_ = budget;
}

size_t InodeTable::OpenDescriptors() const {
  std::lock_guard lock(mu_);
  return listed_;
}

void InodeTable::SetDescriptorsHeldElsewhere(std::function<uint64_t()> held) {
  std::lock_guard lock(mu_);
  held_elsewhere_ = std::move(held);
}

size_t InodeTable::Budget() const {
  if (fixed_budget_ != 0) return fixed_budget_;
  // Read each time: an administrator may change the daemon's limit (prlimit(1)) while it runs.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return SIZE_MAX / 2;
  uint64_t left = rl.rlim_cur;
  if (held_elsewhere_) {
    const uint64_t held = held_elsewhere_();
    left = held < left ? left - held : 0;
  }
  return std::max<size_t>(static_cast<size_t>(left / 2), 16);
}

void InodeTable::List(Inode* inode) {
  mu_.AssertHeld();
  assert(!inode->listed && inode->table == this);
  inode->lru_prev = lru_tail_;
  inode->lru_next = nullptr;
  (lru_tail_ != nullptr ? lru_tail_->lru_next : lru_head_) = inode;
  lru_tail_ = inode;
  inode->listed = true;
  ++listed_;
}

void InodeTable::Unlist(Inode* inode) {
  mu_.AssertHeld();
  assert(inode->listed && listed_ > 0);
  if (hand_ == inode) hand_ = inode->lru_next;
  (inode->lru_prev != nullptr ? inode->lru_prev->lru_next : lru_head_) = inode->lru_next;
  (inode->lru_next != nullptr ? inode->lru_next->lru_prev : lru_tail_) = inode->lru_prev;
  inode->lru_prev = inode->lru_next = nullptr;
  inode->listed = false;
  --listed_;
}

void InodeTable::TrimDescriptorsTo(size_t target, bool second_chance) {
  mu_.AssertHeld();
  if (listed_ <= target) return;
  // Second chance: a descriptor used since the last pass is passed over once. One that is in
  // use, or whose node has open files (their requests come often), is not closed.
  size_t steps = 2 * listed_;
  while (listed_ > target && steps-- > 0) {
    Inode* n = hand_ != nullptr ? hand_ : lru_head_;
    hand_ = n->lru_next;
    if (n->open_handles.load() != 0 ||
        (n->fd_used.exchange(false, std::memory_order_relaxed) && second_chance))
      continue;
    std::lock_guard l(n->fd_slot->mu);
    if (n->fd_slot->users != 0) continue;
    close(n->fd_slot->fd);
    n->fd_slot->fd = -1;
    Unlist(n);
  }
}

int InodeTable::OpenMakingRoom(const std::function<int()>& open) {
  int fd = open();
  if (fd >= 0 || (errno != EMFILE && errno != ENFILE)) return fd;
  const int err = errno;
  size_t before;
  {
    std::lock_guard lock(mu_);
    before = listed_;
    TrimDescriptorsTo(listed_ / 2, false);
    if (listed_ == before) {
      errno = err;
      return -1;
    }
  }
  return open();
}

void InodeTable::Reopened(const Inode* node) {
  // The table owns every node; only its list links change here.
  Inode* inode = const_cast<Inode*>(node);
  std::lock_guard lock(mu_);
  {
    // Closed again already by a trim that ran before this took the table's lock.
    std::lock_guard l(inode->fd_slot->mu);
    if (inode->fd_slot->fd < 0 || inode->listed) return;
  }
  List(inode);
  TrimDescriptors();
}

bool InodeTable::StillThere(Inode* inode) {
  mu_.AssertHeld();
  if (inode->table == nullptr) return true;
  NodeFdSlot& slot = *inode->fd_slot;
  {
    std::lock_guard l(slot.mu);
    if (slot.fd >= 0) return true;
    // A number whose object went behind the daemon's back may name a new object now.
    slot.fd = inode->handle->Open(inode->mount_fd, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (slot.fd < 0) return false;
    inode->fd_used.store(true, std::memory_order_relaxed);
    List(inode);
  }
  // Opened again, it counts against the budget as a new node does (the trim takes nodes' slot
  // locks, this one's among them). Before, a lookup of a known node grew the table past it.
  TrimDescriptors();
  return true;
}

Inode* InodeTable::Acquire(int fd, const struct stat& st, int source_index) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{st.st_dev, st.st_ino});
  if (it != by_key_.end()) {
    if (StillThere(it->second.get())) {
      close(fd);
      it->second->nlookup++;
      return it->second.get();
    }
    retired_.emplace(it->second.get(), std::move(it->second));
    by_key_.erase(it);
  }
  auto inode = NewInode(fd, st, source_index);
  Inode* raw = inode.get();
  by_key_.emplace(Key{st.st_dev, st.st_ino}, std::move(inode));
  return raw;
}

Inode* InodeTable::AcquireKnown(const struct stat& st) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{st.st_dev, st.st_ino});
  if (it == by_key_.end()) return nullptr;
  Inode* inode = it->second.get();
  if (!StillThere(inode)) {
    // Its object is gone: whoever still holds the node gets ESTALE, the number a new node.
    retired_.emplace(inode, std::move(it->second));
    by_key_.erase(it);
    return nullptr;
  }
  TrimDescriptors();
  inode->nlookup++;
  return inode;
}

Inode* InodeTable::AcquireTx(const Guid& tx, const fstx::ObjectId& object, int fd,
                             const struct stat& st, int source_index, const std::string& view_path,
                             bool* handed_over) {
  if (handed_over != nullptr) *handed_over = false;
  std::lock_guard lock(mu_);
  auto key = VersionKey{tx, source_index, object};
  auto it = versions_.find(key);
  if (it != versions_.end()) {
    Inode* known = it->second.get();
    // An existing object's number, if its object went while the node's descriptor was closed,
    // may name another object now, perhaps of another type: that one gets a node of its own.
    if (StillThere(known)) {
      close(fd);
      known->nlookup++;
      view_paths_[known] = view_path;
      return known;
    }
    if (known->listed) Unlist(known);
    view_paths_.erase(known);
    DropObjectVersion(known);
    retired_.emplace(known, std::move(it->second));
    versions_.erase(it);
  }
  if (handed_over != nullptr) {
    auto [from, to] = ended_versions_.equal_range({source_index, object});
    for (auto e = from; e != to; ++e) {
      Inode* v = e->second;
      {
        // An open increments open_handles before it reads the node's transaction (under
        // tx_mu): it either sees the new transaction or keeps the node from being handed over.
        std::lock_guard l(v->tx_mu);
        if (v->open_handles.load() != 0) continue;
        // Its descriptor, open, is what keeps the object's number from reuse.
        if (v->table != nullptr) {
          std::lock_guard fl(v->fd_slot->mu);
          if (v->fd_slot->fd < 0) continue;
        }
        auto node = versions_.extract(VersionKey{v->tx, source_index, object});
        node.key() = key;
        versions_.insert(std::move(node));
        v->tx = tx;
      }
      ended_versions_.erase(e);
      v->tx_ended = false;
      v->nlookup++;
      v->XattrsChanging();  // what it knew of security.capability was the other view's
      view_paths_[v] = view_path;
      close(fd);  // v's descriptor holds the same object, which keeps its number from reuse
      *handed_over = true;
      return v;
    }
  }
  auto inode = NewInode(fd, st, source_index);
  inode->kind = Inode::Kind::kTxVersion;
  inode->tx = tx;
  inode->object = object;
  Inode* raw = inode.get();
  versions_.emplace(key, std::move(inode));
  object_versions_.emplace(std::make_tuple(source_index, raw->dev, raw->ino), raw);
  view_paths_[raw] = view_path;
  return raw;
}

void InodeTable::DropObjectVersion(Inode* v) {
  mu_.AssertHeld();
  auto [from, to] = object_versions_.equal_range({v->source_index, v->dev, v->ino});
  for (auto e = from; e != to; ++e) {
    if (e->second == v) {
      object_versions_.erase(e);
      return;
    }
  }
}

std::vector<const Inode*> InodeTable::OtherVersionsLocked(const Guid& tx, int source, dev_t dev,
                                                          ino_t ino) const {
  mu_.AssertHeld();
  std::vector<const Inode*> out;
  auto [from, to] = object_versions_.equal_range({source, dev, ino});
  for (auto e = from; e != to; ++e) {
    // A node's transaction changes under mu_ (AcquireTx's hand-over).
    if (e->second->tx != tx) out.push_back(e->second);
  }
  return out;
}

std::vector<fuse_ino_t> InodeTable::OtherVersionNodes(const Guid& tx, int source, dev_t dev,
                                                      ino_t ino) const {
  std::lock_guard lock(mu_);
  std::vector<fuse_ino_t> out;
  for (const Inode* v : OtherVersionsLocked(tx, source, dev, ino))
    out.push_back(NodeId(v));
  return out;
}

void InodeTable::MarkTxEnded(const Guid& tx) {
  // Directories keep a node per transaction: the kernel keeps one dentry per directory node,
  // and an ended transaction's may sit at a name it rolled back. Objects it created are
  // numbered per transaction, so never meet again.
  std::lock_guard lock(mu_);
  for (auto it = versions_.lower_bound(VersionKey{tx, INT_MIN, fstx::ObjectId{}});
       it != versions_.end() && std::get<0>(it->first) == tx; ++it) {
    Inode* v = it->second.get();
    if (v->tx_ended || v->object.kind != fstx::ObjectId::Kind::kExisting || S_ISDIR(v->type))
      continue;
    v->tx_ended = true;
    ended_versions_.emplace(std::make_pair(v->source_index, v->object), v);
  }
}

std::string InodeTable::ViewPath(const Inode* inode) const {
  std::lock_guard lock(mu_);
  auto it = view_paths_.find(inode);
  return it == view_paths_.end() ? std::string() : it->second;
}

void InodeTable::MoveViewPaths(const Guid& tx, int source_index, const std::string& from,
                               const std::string& to, bool exchange) {
  auto under = [](const std::string& path, const std::string& dir) {
    return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                           path[dir.size()] == '/');
  };
  std::lock_guard lock(mu_);
  for (auto& [inode, path] : view_paths_) {
    if (inode->tx != tx || inode->source_index != source_index) continue;
    if (under(path, from)) {
      path = to + path.substr(from.size());
    } else if (exchange && under(path, to)) {
      path = from + path.substr(to.size());
    }
  }
}

void InodeTable::Ref(Inode* inode, uint64_t n) {
  std::lock_guard lock(mu_);
  inode->nlookup += n;
}

void InodeTable::Forget(Inode* inode, uint64_t n) {
  std::lock_guard lock(mu_);
  if (inode->is_virtual_root()) return;
  // The kernel forgets only lookups it was given; the daemon gives back the ones it never sent.
  assert(n <= inode->nlookup && "more lookups forgotten than counted");
  inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
  if (inode->nlookup != 0 || inode->pinned) return;
  if (inode->listed) Unlist(inode);
  if (auto r = retired_.find(inode); r != retired_.end()) {
    retired_.erase(r);  // a retired version's key names its successor now
  } else if (inode->is_tx_version()) {
    view_paths_.erase(inode);
    if (inode->tx_ended) {
      auto [from, to] = ended_versions_.equal_range({inode->source_index, inode->object});
      for (auto e = from; e != to; ++e) {
        if (e->second == inode) {
          ended_versions_.erase(e);
          break;
        }
      }
    }
    DropObjectVersion(inode);
    versions_.erase(VersionKey{inode->tx, inode->source_index, inode->object});
  } else {
    by_key_.erase(Key{inode->dev, inode->ino});
  }
}

void InodeTable::Retire(dev_t dev, ino_t ino) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{dev, ino});
  if (it == by_key_.end() || it->second->pinned) return;
  Inode* raw = it->second.get();
  retired_.emplace(raw, std::move(it->second));
  by_key_.erase(it);
}

std::vector<fuse_ino_t> InodeTable::VersionNodes(const Guid& tx) const {
  std::lock_guard lock(mu_);
  std::vector<fuse_ino_t> out;
  for (auto it = versions_.lower_bound(VersionKey{tx, INT_MIN, fstx::ObjectId{}});
       it != versions_.end() && std::get<0>(it->first) == tx; ++it) {
    out.push_back(NodeId(it->second.get()));
  }
  return out;
}

fstx::ReplaceWhen InodeTable::ReplaceWhen(const Guid& tx, int source,
                                          const fstx::ObjectId& id) const {
  std::lock_guard lock(mu_);
  auto own = versions_.find(VersionKey{tx, source, id});
  if (own != versions_.end() && own->second->open_handles.load() > 0)
    return fstx::ReplaceWhen::kNever;
  if (OtherNodeHasLocked(tx, source, static_cast<dev_t>(id.dev), static_cast<ino_t>(id.ino),
                         &Inode::write_handles))
    return fstx::ReplaceWhen::kNever;
  return KnownElsewhereLocked(tx, source, id) ? fstx::ReplaceWhen::kIfWhole
                                              : fstx::ReplaceWhen::kIfWrittenOnce;
}

bool InodeTable::IsExecuting(int source, dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  return OtherNodeHasLocked(Guid{}, source, dev, ino, &Inode::exec_handles);
}

bool InodeTable::OtherNodeHasLocked(const Guid& tx, int source, dev_t dev, ino_t ino,
                                    std::atomic<uint32_t> Inode::*count) const {
  mu_.AssertHeld();
  auto it = by_key_.find(Key{dev, ino});
  if (it != by_key_.end() && ((*it->second).*count).load() > 0) return true;
  for (const Inode* v : OtherVersionsLocked(tx, source, dev, ino))
    if ((v->*count).load() > 0) return true;
  return false;
}

bool InodeTable::KnownElsewhereLocked(const Guid& tx, int source, const fstx::ObjectId& id) const {
  const dev_t dev = static_cast<dev_t>(id.dev);
  const ino_t ino = static_cast<ino_t>(id.ino);
  // Another transaction's node, live or ended, found or created there, reads it as committed.
  return by_key_.count(Key{dev, ino}) > 0 || !OtherVersionsLocked(tx, source, dev, ino).empty();
}

std::vector<std::pair<int, fstx::ObjectId>> InodeTable::FlushedUnreleasedLocked(
    const Guid& tx) const {
  std::vector<std::pair<int, fstx::ObjectId>> out;
  for (auto it = versions_.lower_bound(VersionKey{tx, INT_MIN, fstx::ObjectId{}});
       it != versions_.end() && std::get<0>(it->first) == tx; ++it) {
    const Inode* v = it->second.get();
    if (v->object.kind != fstx::ObjectId::Kind::kExisting) continue;  // never replaced
    const uint32_t open = v->open_handles.load();
    if (open == 0 || v->flushed_handles.load() < open) continue;
    // Written in place, a file no other node knows tears for no reader (ReplaceWhen).
    if (KnownElsewhereLocked(tx, v->source_index, v->object))
      out.emplace_back(v->source_index, v->object);
  }
  return out;
}

size_t InodeTable::AwaitFlushedReleased(const Guid& tx, std::chrono::milliseconds bound,
                                        const ChangedBy& changed) {
  auto pending = [&] {
    std::vector<std::pair<int, fstx::ObjectId>> nodes;
    {
      std::lock_guard lock(mu_);
      nodes = FlushedUnreleasedLocked(tx);
    }
    // Asked without the table's lock: `changed` takes locks of its own.
    return static_cast<size_t>(std::count_if(
        nodes.begin(), nodes.end(), [&](const auto& n) { return changed(n.first, n.second); }));
  };
  if (pending() == 0) return 0;
  std::unique_lock l(release_mu_);
  release_waiters_++;
  size_t left = 0;
  released_.wait_for(l, bound, [&] { return (left = pending()) == 0; });
  release_waiters_--;
  return left;
}

size_t InodeTable::ReleaseWaitersForTests() const {
  return static_cast<size_t>(release_waiters_.load());
}

void InodeTable::HandlesChanged() {
  if (release_waiters_.load() == 0) return;
  std::lock_guard l(release_mu_);
  released_.notify_all();
}

std::optional<InodeTable::Changed> InodeTable::NoteChanged(dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{dev, ino});
  if (it == by_key_.end()) return std::nullopt;
  it->second->XattrsChanging();
  return Changed{NodeId(it->second.get()), S_ISDIR(it->second->type)};
}

std::optional<fuse_ino_t> InodeTable::FindNode(dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{dev, ino});
  if (it == by_key_.end()) return std::nullopt;
  return NodeId(it->second.get());
}

std::optional<fuse_ino_t> InodeTable::FindDirectoryNode(dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{dev, ino});
  if (it == by_key_.end() || !S_ISDIR(it->second->type)) return std::nullopt;
  return NodeId(it->second.get());
}

int InodeTable::ReopenObject(dev_t dev, ino_t ino, int flags) const {
  std::lock_guard lock(mu_);
  const Inode* inode = nullptr;
  if (auto it = by_key_.find(Key{dev, ino}); it != by_key_.end()) inode = it->second.get();
  // A file a transaction created is known to the kernel by its version node alone, after the
  // commit too (a mapping made inside the transaction keeps that node). Rarely asked: a scan.
  for (auto v = versions_.begin(); inode == nullptr && v != versions_.end(); ++v) {
    const Inode* n = v->second.get();
    if (n->object.kind == fstx::ObjectId::Kind::kNew && n->dev == dev && n->ino == ino) inode = n;
  }
  if (inode == nullptr) return -1;
  std::lock_guard l(inode->fd_slot->mu);
  if (inode->fd_slot->fd < 0)
    return inode->handle ? inode->handle->Open(inode->mount_fd, flags | O_CLOEXEC) : -1;
  return open(("/proc/self/fd/" + std::to_string(inode->fd_slot->fd)).c_str(), flags);
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return by_key_.size() + versions_.size() + retired_.size();
}

}  // namespace ktmfs::fs

#include "fs/inode_table.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

namespace ktmfs::fs {

Inode::~Inode() {
  if (fd >= 0) close(fd);
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
  auto inode = std::make_unique<Inode>();
  inode->fd = fd;
  inode->dev = st.st_dev;
  inode->ino = st.st_ino;
  inode->type = st.st_mode & S_IFMT;
  inode->generation = next_generation_++;
  inode->nlookup = 1;
  inode->source_index = source_index;
  return inode;
}

Inode* InodeTable::Acquire(int fd, const struct stat& st, int source_index) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{st.st_dev, st.st_ino});
  if (it != by_key_.end()) {
    close(fd);
    it->second->nlookup++;
    return it->second.get();
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
  it->second->nlookup++;
  return it->second.get();
}

Inode* InodeTable::AcquireTx(const Guid& tx, const fstx::ObjectId& object, int fd,
                             const struct stat& st, int source_index, const std::string& view_path,
                             bool* handed_over) {
  if (handed_over != nullptr) *handed_over = false;
  std::lock_guard lock(mu_);
  auto key = VersionKey{tx, source_index, object};
  auto it = versions_.find(key);
  if (it != versions_.end()) {
    close(fd);
    it->second->nlookup++;
    view_paths_[it->second.get()] = view_path;
    return it->second.get();
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
  view_paths_[raw] = view_path;
  return raw;
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
  inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
  if (inode->nlookup != 0 || inode->pinned) return;
  if (inode->is_tx_version()) {
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
    versions_.erase(VersionKey{inode->tx, inode->source_index, inode->object});
  } else if (auto r = retired_.find(inode); r != retired_.end()) {
    retired_.erase(r);
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

bool InodeTable::MayReplace(const Guid& tx, int source, const fstx::ObjectId& id) const {
  std::lock_guard lock(mu_);
  auto own = versions_.find(VersionKey{tx, source, id});
  if (own != versions_.end() && own->second->open_handles.load() > 0) return false;
  return by_key_.count(Key{static_cast<dev_t>(id.dev), static_cast<ino_t>(id.ino)}) > 0 ||
         ended_versions_.count({source, id}) > 0;
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

int InodeTable::ReopenObject(dev_t dev, ino_t ino, int flags) const {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{dev, ino});
  if (it == by_key_.end()) return -1;
  return open(("/proc/self/fd/" + std::to_string(it->second->fd)).c_str(), flags);
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return by_key_.size() + versions_.size() + retired_.size();
}

}  // namespace ktmfs::fs

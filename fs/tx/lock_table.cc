#include "fs/tx/lock_table.h"

#include <fcntl.h>

#include <algorithm>
#include <cassert>
#include <vector>

namespace ktmfs::fstx {

std::string Describe(const LockKey& key) {
  if (const auto* o = std::get_if<ObjectKey>(&key))
    return "object " + std::to_string(o->dev) + ":" + std::to_string(o->ino);
  const auto& e = std::get<EntryKey>(key);
  return "entry " + std::to_string(e.dir_dev) + ":" + std::to_string(e.dir_ino) + "/" + e.name;
}

namespace {

bool IsAtOrBelow(const std::string& path, const std::string& dir) {
  return dir.empty() || path == dir ||
         (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
          path[dir.size()] == '/');
}

}  // namespace

const Guid* LockTable::NameAboveLocked(const std::string& path, const Guid& tx) const {
  // Every ancestor of "a/b/c", and the path itself: "a", "a/b", "a/b/c".
  for (size_t end = path.find('/');; end = path.find('/', end + 1)) {
    const std::string prefix = path.substr(0, end);
    auto [first, last] = by_path_.equal_range(prefix);
    for (auto it = first; it != last; ++it) {
      if (!std::holds_alternative<EntryKey>(it->second)) continue;
      const Guid& holder = holders_.at(it->second);
      if (holder != tx) return &holder;
    }
    if (end == std::string::npos) return nullptr;
  }
}

const Guid* LockTable::HeldUnderLocked(const std::string& dir, const Guid& tx) const {
  auto it = dir.empty() ? by_path_.begin() : by_path_.lower_bound(dir);
  for (; it != by_path_.end() && IsAtOrBelow(it->first, dir); ++it) {
    const Guid& holder = holders_.at(it->second);
    if (holder != tx) return &holder;
  }
  // Paths that sort between "dir" and "dir/" ("dir-x", "dir.x") end the run above early; the
  // subtree itself starts at "dir/".
  if (!dir.empty()) {
    for (it = by_path_.lower_bound(dir + "/"); it != by_path_.end() && IsAtOrBelow(it->first, dir);
         ++it) {
      const Guid& holder = holders_.at(it->second);
      if (holder != tx) return &holder;
    }
  }
  return nullptr;
}

namespace {
thread_local LockTable::Journal* t_journal = nullptr;
}  // namespace

Status LockTable::Acquire(const Guid& tx, const LockKey& key, const std::string& path) {
  std::unique_lock lock(mu_);
  if (const auto* object = std::get_if<ObjectKey>(&key);
      object != nullptr && holders_.find(key) == holders_.end()) {
    AwaitReleaseLocked(lock, *object);
  }
  auto found = holders_.find(key);
  if (found != holders_.end() && found->second != tx)
    return Status::Busy(Describe(key) + " is held by transaction " + found->second.ToString());
  if (const auto* object = std::get_if<ObjectKey>(&key);
      object != nullptr && found == holders_.end() && OutsideWriterLocked(*object)) {
    return Status::Busy(Describe(key) + " is open for writing outside transactions");
  }
  const bool held = found != holders_.end();
  Journal* journal = t_journal;
  if (journal != nullptr && (&journal->table_ != this || journal->tx_ != tx)) journal = nullptr;
  if (held) ShareLocked(tx, key, journal);
  if (held && (path.empty() || HasPathLocked(key, path))) return Status::Ok();
  if (!path.empty()) {
    if (const Guid* h = NameAboveLocked(path, tx)) {
      return Status::Busy("'" + path + "' is below a name that transaction " + h->ToString() +
                          " removes or moves");
    }
    if (std::holds_alternative<EntryKey>(key)) {
      if (const Guid* h = HeldUnderLocked(path, tx)) {
        return Status::Busy("transaction " + h->ToString() + " holds something at or below '" +
                            path + "'");
      }
    }
  }
  if (!held) {
    holders_.emplace(key, tx);
    held_[tx].push_back(key);
    if (journal != nullptr) journal->keys_.push_back(key);
  }
  if (!path.empty()) {
    // An object already held, reached now by another of its names: that name is held too, so
    // nobody moves or removes a directory above it while the transaction's ops name it there.
    paths_[key].push_back(path);
    by_path_.emplace(path, key);
    ++path_count_;
    if (journal != nullptr) journal->paths_.emplace_back(key, path);
  }
  count_.store(holders_.size(), std::memory_order_release);
  AssertConsistentLocked();
  return Status::Ok();
}

Status LockTable::AddOutsideWriter(const ObjectKey& key) {
  std::lock_guard lock(mu_);
  auto found = holders_.find(LockKey{key});
  if (found != holders_.end())
    return Status::Busy(Describe(key) + " is held by transaction " + found->second.ToString());
  ++outside_writers_[key].open;
  return Status::Ok();
}

void LockTable::RemoveOutsideWriter(const ObjectKey& key, bool still_open) {
  std::lock_guard lock(mu_);
  auto found = outside_writers_.find(key);
  assert(found != outside_writers_.end() && found->second.open > 0);
  if (found == outside_writers_.end() || found->second.open == 0) return;
  writer_released_.notify_all();
  if (--found->second.open > 0) return;
  if (still_open && writer_probe_) {
    found->second.lingering = true;
  } else {
    outside_writers_.erase(found);
  }
}

bool LockTable::HasOutsideWriter(const ObjectKey& key, bool grace) {
  std::unique_lock lock(mu_);
  if (grace) AwaitReleaseLocked(lock, key);
  return OutsideWriterLocked(key);
}

void LockTable::AwaitReleaseLocked(std::unique_lock<std::mutex>& lock, const ObjectKey& key) {
  auto open = [&] {
    auto found = outside_writers_.find(key);
    return found != outside_writers_.end() && found->second.open > 0;
  };
  if (open()) writer_released_.wait_for(lock, kReleaseGrace, [&] { return !open(); });
}

void LockTable::SetWriterProbe(WriterProbe probe) {
  std::lock_guard lock(mu_);
  writer_probe_ = std::move(probe);
}

bool LockTable::OutsideWriterLocked(const ObjectKey& key) {
  auto found = outside_writers_.find(key);
  if (found == outside_writers_.end()) return false;
  if (found->second.open > 0) return true;
  if (found->second.lingering && writer_probe_ && writer_probe_(key)) return true;
  outside_writers_.erase(found);
  return false;
}

bool StillOpenForWriting(int fd) {
  // The kernel grants a read lease only on a file nobody has open for writing (a mapping's
  // file counts while the mapping lives); the lease is given back at once.
  if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    (void)fcntl(fd, F_SETLEASE, F_UNLCK);
    return false;
  }
  // EAGAIN: open for writing. Any other answer (a filesystem without leases) cannot tell; the
  // hold then ends with the last release, as it would without mappings.
  return errno == EAGAIN;
}

bool LockTable::HasPathLocked(const LockKey& key, const std::string& path) const {
  auto p = paths_.find(key);
  return p != paths_.end() &&
         std::find(p->second.begin(), p->second.end(), path) != p->second.end();
}

void LockTable::AssertConsistentLocked() const {
  // Every key taken with a path is in both path indexes, once, and is held. (Counts only: a
  // full cross-check would make every lock cost the size of the table.)
  assert(path_count_ == by_path_.size());
  assert(paths_.size() <= holders_.size());
  assert(held_.empty() == holders_.empty());
}

std::optional<Guid> LockTable::Holder(const LockKey& key) const {
  if (empty()) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = holders_.find(key);
  if (it == holders_.end()) return std::nullopt;
  return it->second;
}

void LockTable::ShareLocked(const Guid& tx, const LockKey& key, const Journal* own) {
  for (Journal* j : journals_) {
    if (j == own || j->tx_ != tx) continue;
    j->keys_.erase(std::remove(j->keys_.begin(), j->keys_.end(), key), j->keys_.end());
    std::erase_if(j->paths_, [&](const auto& p) { return p.first == key; });
  }
}

bool LockTable::TakeAgain(const Guid& tx, const LockKey& key) {
  if (empty()) return false;
  std::lock_guard lock(mu_);
  auto it = holders_.find(key);
  if (it == holders_.end() || it->second != tx) return false;
  Journal* own = t_journal != nullptr && &t_journal->table_ == this ? t_journal : nullptr;
  ShareLocked(tx, key, own);
  return true;
}

LockTable::Journal::Journal(LockTable& table, const Guid& tx)
    : table_(table), tx_(tx), outer_(t_journal) {
  t_journal = this;
  std::lock_guard lock(table_.mu_);
  table_.journals_.push_back(this);
}

LockTable::Journal::~Journal() {
  assert(t_journal == this);
  t_journal = outer_;
  std::lock_guard lock(table_.mu_);
  auto& live = table_.journals_;
  live.erase(std::find(live.begin(), live.end(), this));
}

void LockTable::Journal::Undo(const std::function<void(const LockKey&)>& releasing) {
  LockTable& t = table_;
  std::lock_guard lock(t.mu_);
  for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) {
    const auto& [key, path] = *it;
    auto p = t.paths_.find(key);
    if (p == t.paths_.end()) continue;
    auto at = std::find(p->second.begin(), p->second.end(), path);
    if (at == p->second.end()) continue;
    p->second.erase(at);
    if (p->second.empty()) t.paths_.erase(p);
    auto [first, last] = t.by_path_.equal_range(path);
    for (auto b = first; b != last; ++b) {
      if (b->second == key) {
        t.by_path_.erase(b);
        break;
      }
    }
    --t.path_count_;
  }
  for (const LockKey& key : keys_) {
    auto h = t.holders_.find(key);
    if (h == t.holders_.end() || h->second != tx_) continue;
    if (releasing) releasing(key);
    t.holders_.erase(h);
    auto& mine = t.held_[tx_];
    mine.erase(std::remove(mine.begin(), mine.end(), key), mine.end());
    if (mine.empty()) t.held_.erase(tx_);
  }
  keys_.clear();
  paths_.clear();
  t.count_.store(t.holders_.size(), std::memory_order_release);
  t.AssertConsistentLocked();
}

size_t LockTable::ReleaseAll(const Guid& tx) {
  std::lock_guard lock(mu_);
  auto it = held_.find(tx);
  if (it == held_.end()) return 0;
  size_t n = it->second.size();
  for (const auto& key : it->second) {
    holders_.erase(key);
    auto p = paths_.find(key);
    if (p == paths_.end()) continue;
    for (const std::string& path : p->second) {
      auto [first, last] = by_path_.equal_range(path);
      for (auto b = first; b != last; ++b) {
        if (b->second == key) {
          by_path_.erase(b);
          break;
        }
      }
    }
    path_count_ -= p->second.size();
    paths_.erase(p);
  }
  held_.erase(it);
  count_.store(holders_.size(), std::memory_order_release);
  AssertConsistentLocked();
  return n;
}

bool LockTable::HeldUnder(const std::string& dir, const Guid& except) const {
  if (empty()) return false;
  std::lock_guard lock(mu_);
  return HeldUnderLocked(dir, except) != nullptr;
}

bool LockTable::NameHeldAbove(const std::string& path, const Guid& except) const {
  if (empty()) return false;
  std::lock_guard lock(mu_);
  return NameAboveLocked(path, except) != nullptr;
}

size_t LockTable::CountHeldBy(const Guid& tx) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(tx);
  return it == held_.end() ? 0 : it->second.size();
}

std::vector<Guid> LockTable::Holders() const {
  std::lock_guard lock(mu_);
  std::vector<Guid> out;
  out.reserve(held_.size());
  for (const auto& [tx, keys] : held_)
    out.push_back(tx);
  return out;
}

std::vector<LockKey> LockTable::HeldBy(const Guid& tx) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(tx);
  return it == held_.end() ? std::vector<LockKey>{} : it->second;
}

size_t LockTable::size() const {
  std::lock_guard lock(mu_);
  return holders_.size();
}

}  // namespace ktmfs::fstx

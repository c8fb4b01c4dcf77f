#include "fs/tx/lock_table.h"

#include <vector>

namespace ktmfs::fstx {

std::string Describe(const LockKey& key) {
  if (const auto* o = std::get_if<ObjectKey>(&key))
    return "object " + std::to_string(o->dev) + ":" + std::to_string(o->ino);
  const auto& e = std::get<EntryKey>(key);
  return "entry " + std::to_string(e.dir_dev) + ":" + std::to_string(e.dir_ino) + "/" + e.name;
}

Status LockTable::Acquire(const Guid& tx, const LockKey& key) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = holders_.try_emplace(key, tx);
  if (inserted) {
    held_[tx].push_back(key);
    count_.store(holders_.size(), std::memory_order_release);
    return Status::Ok();
  }
  if (it->second == tx) return Status::Ok();
  return Status::Busy(Describe(key) + " is held by transaction " + it->second.ToString());
}

std::optional<Guid> LockTable::Holder(const LockKey& key) const {
  if (empty()) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = holders_.find(key);
  if (it == holders_.end()) return std::nullopt;
  return it->second;
}

size_t LockTable::ReleaseAll(const Guid& tx) {
  std::lock_guard lock(mu_);
  auto it = held_.find(tx);
  if (it == held_.end()) return 0;
  size_t n = it->second.size();
  for (const auto& key : it->second)
    holders_.erase(key);
  held_.erase(it);
  count_.store(holders_.size(), std::memory_order_release);
  return n;
}

size_t LockTable::CountHeldBy(const Guid& tx) const {
  std::lock_guard lock(mu_);
  auto it = held_.find(tx);
  return it == held_.end() ? 0 : it->second.size();
}

size_t LockTable::size() const {
  std::lock_guard lock(mu_);
  return holders_.size();
}

}  // namespace ktmfs::fstx

#include "fs/user_quota.h"

#include <cassert>
#include <cerrno>
#include <string>

namespace ktmfs::fs {

Status UserQuota::TakeTransaction(uid_t uid) {
  std::lock_guard l(mu_);
  Usage& u = usage_[uid];
  // Refused only with transactions counted, so the entry is never left empty.
  if (uid != 0 && caps_.transactions != 0 && u.transactions >= caps_.transactions) {
    return Status::Error(EMFILE, "user " + std::to_string(uid) + " has " +
                                     std::to_string(caps_.transactions) +
                                     " live transactions, the most -o max_user_transactions "
                                     "allows: end one first");
  }
  u.transactions++;
  return Status::Ok();
}

void UserQuota::GiveTransaction(uid_t uid) {
  std::lock_guard l(mu_);
  auto it = usage_.find(uid);
  assert(it != usage_.end() && it->second.transactions > 0);
  if (it == usage_.end()) return;
  it->second.transactions--;
  if (it->second.transactions == 0 && it->second.memory == 0) usage_.erase(it);
}

Status UserQuota::TakeMemory(uid_t uid, uint64_t bytes) {
  std::lock_guard l(mu_);
  Usage& u = usage_[uid];
  if (uid != 0 && caps_.memory != 0 && u.memory + bytes > caps_.memory) {
    if (u.transactions == 0 && u.memory == 0) usage_.erase(uid);
    return Status::Error(ENOSPC, "user " + std::to_string(uid) + "'s live transactions hold " +
                                     std::to_string(u.memory) + " bytes in the daemon's memory; " +
                                     std::to_string(bytes) + " more would pass the " +
                                     std::to_string(caps_.memory) +
                                     " of -o max_user_memory: commit or roll back first");
  }
  u.memory += bytes;
  return Status::Ok();
}

void UserQuota::GiveMemory(uid_t uid, uint64_t bytes) {
  if (bytes == 0) return;
  std::lock_guard l(mu_);
  auto it = usage_.find(uid);
  assert(it != usage_.end() && it->second.memory >= bytes);
  if (it == usage_.end()) return;
  it->second.memory -= bytes < it->second.memory ? bytes : it->second.memory;
  if (it->second.transactions == 0 && it->second.memory == 0) usage_.erase(it);
}

UserQuota::Usage UserQuota::UsageOf(uid_t uid) const {
  std::lock_guard l(mu_);
  auto it = usage_.find(uid);
  return it == usage_.end() ? Usage{} : it->second;
}

}  // namespace ktmfs::fs

#include "fs/control/user_quota.h"

#include <sys/resource.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <string>

namespace ktmfs::fs {

namespace {

UserCaps Resolved(UserCaps caps) {
  if (caps.descriptors == UserCaps::kQuarterOfFileLimit) {
    struct rlimit rl;
    const bool limited = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY;
    caps.descriptors = limited ? std::max<uint64_t>(rl.rlim_cur / 4, 16) : 0;
    caps.all_users_descriptors = limited ? std::max<uint64_t>(rl.rlim_cur / 2, 16) : 0;
  }
  return caps;
}

}  // namespace

UserQuota::UserQuota(UserCaps caps) : caps_(Resolved(caps)) {}

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
  if (it->second.empty()) usage_.erase(it);
}

Status UserQuota::TakeMemory(uid_t uid, uint64_t bytes) {
  std::lock_guard l(mu_);
  Usage& u = usage_[uid];
  if (uid != 0 && caps_.memory != 0 && u.memory + bytes > caps_.memory) {
    if (u.empty()) usage_.erase(uid);
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
  if (it->second.empty()) usage_.erase(it);
}

Status UserQuota::TakeDescriptor(uid_t uid) {
  std::lock_guard l(mu_);
  Usage& u = usage_[uid];
  if (uid != 0 && caps_.descriptors != 0 && u.descriptors >= caps_.descriptors) {
    if (u.empty()) usage_.erase(uid);
    return Status::Error(EMFILE, "user " + std::to_string(uid) + "'s live transactions hold " +
                                     std::to_string(u.descriptors) +
                                     " changed files open in the daemon, the most -o "
                                     "max_user_descriptors allows: commit or roll back first");
  }
  if (uid != 0 && caps_.all_users_descriptors != 0 &&
      users_descriptors_ >= caps_.all_users_descriptors) {
    if (u.empty()) usage_.erase(uid);
    return Status::Error(EMFILE, "users' live transactions together hold " +
                                     std::to_string(users_descriptors_) +
                                     " changed files open in the daemon, half its file limit: "
                                     "commit or roll back first");
  }
  u.descriptors++;
  total_descriptors_++;
  if (uid != 0) users_descriptors_++;
  return Status::Ok();
}

void UserQuota::GiveDescriptors(uid_t uid, uint64_t n) {
  if (n == 0) return;
  std::lock_guard l(mu_);
  auto it = usage_.find(uid);
  assert(it != usage_.end() && it->second.descriptors >= n);
  if (it == usage_.end()) return;
  const uint64_t given = n < it->second.descriptors ? n : it->second.descriptors;
  it->second.descriptors -= given;
  total_descriptors_ -= given;
  if (uid != 0) users_descriptors_ -= given;
  if (it->second.empty()) usage_.erase(it);
}

uint64_t UserQuota::TotalDescriptors() const {
  std::lock_guard l(mu_);
  return total_descriptors_;
}

UserQuota::Usage UserQuota::UsageOf(uid_t uid) const {
  std::lock_guard l(mu_);
  auto it = usage_.find(uid);
  return it == usage_.end() ? Usage{} : it->second;
}

}  // namespace ktmfs::fs

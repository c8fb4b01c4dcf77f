#include "fs/control/failure_reasons.h"

#include <algorithm>

namespace ktmfs::fs {

void FailureReasons::Remember(pid_t pid, uid_t uid, std::string message) {
  if (pid <= 0) return;  // a caller outside the daemon's pid namespace cannot be told apart
  std::lock_guard l(mu_);
  const Clock::time_point now = Now();
  if (entries_.size() >= kMaxEntries && entries_.find(pid) == entries_.end()) {
    // Full: the expired go first, else the oldest.
    std::erase_if(entries_, [&](const auto& e) { return now - e.second.when > kLifetime; });
    if (entries_.size() >= kMaxEntries) {
      auto oldest = std::min_element(
          entries_.begin(), entries_.end(),
          [](const auto& a, const auto& b) { return a.second.when < b.second.when; });
      entries_.erase(oldest);
    }
  }
  entries_[pid] = Entry{uid, std::move(message), now};
}

std::string FailureReasons::Take(pid_t pid, uid_t uid) {
  std::lock_guard l(mu_);
  auto it = entries_.find(pid);
  if (it == entries_.end() || it->second.uid != uid) return {};
  Entry e = std::move(it->second);
  entries_.erase(it);
  if (Now() - e.when > kLifetime) return {};
  return e.message;
}

}  // namespace ktmfs::fs

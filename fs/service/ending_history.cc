#include "fs/service/ending_history.h"

#include <time.h>

#include <algorithm>

namespace ktmfs::fs {
namespace {

std::string Age(std::chrono::steady_clock::duration d) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  return s < 120 ? std::to_string(s) + " s ago" : std::to_string(s / 60) + " min ago";
}

std::string Sentence(const TxEnding& e) {
  using Outcome = TxEnding::Outcome;
  std::string how;
  switch (e.outcome) {
    case Outcome::kCommitted:
      how = e.recovered ? "was committed before the last daemon stopped (recovered at mount)"
                        : "was committed";
      break;
    case Outcome::kRolledBack:
      how = e.reason.empty() ? "was rolled back by request" : "was rolled back: " + e.reason;
      break;
    case Outcome::kCommitFailed:
      how = "failed to commit: " + e.reason;
      break;
  }
  return "transaction " + e.id.ToString() + " " + how + " (" +
         Age(std::chrono::steady_clock::now() - e.when) + ")";
}

}  // namespace

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void EndingHistory::Remember(TxEnding e) {
  std::lock_guard l(mu_);
  endings_.push_back(std::move(e));
  if (endings_.size() > kKept) endings_.pop_front();
}

bool EndingHistory::Knows(const Guid& id) const {
  std::lock_guard l(mu_);
  return std::any_of(endings_.begin(), endings_.end(),
                     [&](const TxEnding& e) { return e.id == id; });
}

std::vector<TxEnding> EndingHistory::NewestFirst() const {
  std::lock_guard l(mu_);
  return {endings_.rbegin(), endings_.rend()};
}

std::string EndingHistory::SentenceFor(const Guid& id) const {
  std::lock_guard l(mu_);
  for (auto it = endings_.rbegin(); it != endings_.rend(); ++it)
    if (it->id == id) return Sentence(*it);
  return {};
}

std::string EndingHistory::SentenceForChain(const std::vector<pid_t>& chain, uid_t uid) const {
  std::lock_guard l(mu_);
  for (auto it = endings_.rbegin(); it != endings_.rend(); ++it) {
    if (uid != 0 && uid != it->owner) continue;
    if (it->pid == 0 || std::find(chain.begin(), chain.end(), it->pid) == chain.end()) continue;
    return Sentence(*it);
  }
  return {};
}

}  // namespace ktmfs::fs

// The last few hundred transactions that ended since the mount (or that recovery settled at
// it), so that a tool asking after one that is gone hears what became of it: "was rolled back
// 40 s ago: its timeout expired" rather than "no such transaction".
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "src/guid.h"

namespace ktmfs::fs {

struct TxEnding {
  enum class Outcome { kCommitted, kRolledBack, kCommitFailed };
  Guid id;
  uid_t owner = 0;
  pid_t pid = 0;  // the bound process
  Outcome outcome = Outcome::kCommitted;
  // Why it rolled back when nobody asked ("its timeout expired"), or why its commit failed;
  // empty otherwise.
  std::string reason;
  std::string name;
  uint64_t begin_time_ns = 0;  // CLOCK_REALTIME; 0 if unknown
  uint64_t end_time_ns = 0;
  bool recovered = false;      // settled by recovery at mount
  bool apply_pending = false;  // committed, its apply not done yet (filled by TxService::Recent)
  std::chrono::steady_clock::time_point when;
};

// Now, on CLOCK_REALTIME, in nanoseconds: the clock of TxEnding's times.
uint64_t RealtimeNs();

class EndingHistory {
 public:
  void Remember(TxEnding e);
  bool Knows(const Guid& id) const;
  std::vector<TxEnding> NewestFirst() const;
  // What became of `id` ("transaction ... was committed (3 s ago)"); empty if not remembered.
  std::string SentenceFor(const Guid& id) const;
  // The same for the latest transaction bound to one of `chain` (a process and its ancestors)
  // that `uid` may see (all of them for root).
  std::string SentenceForChain(const std::vector<pid_t>& chain, uid_t uid) const;

 private:
  static constexpr size_t kKept = 256;
  mutable std::mutex mu_;
  std::deque<TxEnding> endings_;  // oldest first
};

}  // namespace ktmfs::fs

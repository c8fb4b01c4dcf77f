// The vocabulary shared by the transaction manager and its resource managers: transaction
// states, outcomes, notifications, and what a listing shows.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "src/guid.h"

namespace ktmfs::tm {

// active -> preparing -> prepared -> committing -> committed
//    \          \                                    (preparing/prepared are skipped by
//     +----------+--> rolling back -> rolled back      transactions without enlistments)
// A single-phase commit goes active -> preparing -> committed. After a restart, transactions
// recovery found unfinished wait in committing or rolling back until their RMs have recovered.
enum class TxState : uint8_t {
  kActive,
  kPreparing,    // prepare (or single-phase commit) notifications sent, replies outstanding
  kPrepared,     // every RM prepared; the decision is being made durable
  kCommitting,   // the decision is durable; commit notifications outstanding
  kCommitted,    // final
  kRollingBack,  // rollback notifications outstanding
  kRolledBack,   // final
};
const char* ToString(TxState s);

enum class Outcome : uint8_t { kCommit, kRollback };

// The errno of a commit whose outcome is unknown until recovery: its decision record may or may
// not have reached the disk (a failed flush). Neither "committed" nor "rolled back" would be
// true; the next recovery settles it from the log. Documented in ktmfs.h as
// KTMFS_EOUTCOME_UNKNOWN.
inline constexpr int kOutcomeUnknownErrno = EINPROGRESS;
const char* ToString(Outcome o);

enum class NotificationKind : uint8_t { kPrepare, kCommit, kRollback, kSinglePhaseCommit };
const char* ToString(NotificationKind k);

struct Notification {
  NotificationKind kind;
  Guid transaction;
};

struct BeginOptions {
  uint32_t owner = 0;  // uid
  std::optional<std::chrono::milliseconds> timeout;
  std::string description;
};

struct TransactionInfo {
  Guid id;
  uint32_t owner = 0;
  TxState state = TxState::kActive;
  std::chrono::milliseconds age{0};  // since Begin (since recovery, for recovered ones)
  std::optional<std::chrono::milliseconds> timeout;
  std::string description;
  std::vector<std::string> resource_managers;  // names of the enlisted RMs
  bool recovered = false;                      // found unfinished in the log at recovery
};

// What recovery hands an RM for one of its enlistments the TM found unfinished.
struct InDoubtEnlistment {
  Guid transaction;
  Outcome outcome;
  std::vector<std::byte> info;  // the bytes the RM stored with SetEnlistmentInfo
};

}  // namespace ktmfs::tm

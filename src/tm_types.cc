#include "src/tm_types.h"

namespace ktmfs::tm {

const char* ToString(TxState s) {
  switch (s) {
    case TxState::kActive:
      return "active";
    case TxState::kPreparing:
      return "preparing";
    case TxState::kPrepared:
      return "prepared";
    case TxState::kCommitting:
      return "committing";
    case TxState::kCommitted:
      return "committed";
    case TxState::kRollingBack:
      return "rolling back";
    case TxState::kRolledBack:
      return "rolled back";
  }
  return "?";
}

const char* ToString(Outcome o) {
  return o == Outcome::kCommit ? "commit" : "rollback";
}

const char* ToString(NotificationKind k) {
  switch (k) {
    case NotificationKind::kPrepare:
      return "prepare";
    case NotificationKind::kCommit:
      return "commit";
    case NotificationKind::kRollback:
      return "rollback";
    case NotificationKind::kSinglePhaseCommit:
      return "single-phase commit";
  }
  return "?";
}

}  // namespace ktmfs::tm

// The transaction manager: owns transactions and their outcome, runs single- and two-phase
// commit among the resource managers enlisted in each one, and after a crash rebuilds from its
// log stream what every unfinished transaction's outcome is (src/README.md has the protocol).
//
// Start-up order, as in KTM: open the log(s); TransactionManager::Open; Recover(); for each RM:
// open its stream, RegisterResourceManager, RecoverResourceManager; then serve requests.
//
// Thread safety: every method may be called from any thread. Destroy the TM only when no call is
// in progress and no RM will reply any more; unfinished transactions then roll back at the next
// recovery (presumed abort).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "log/log.h"
#include "log/status.h"
#include "src/guid.h"
#include "src/resource_manager.h"
#include "src/tm_types.h"

namespace ktmfs::tm {

struct TmOptions {
  std::string stream_name = "tm";
  // A restart area is written after this many finished commits or this many bytes appended to
  // the TM stream since the last one, whichever comes first; it lets the stream's base advance.
  uint32_t restart_every_commits = 1024;
  uint64_t restart_every_bytes = 1 << 20;
  // ... or after this many bytes appended to the whole log (every stream) since the last one,
  // checked as transactions end. The TM's base is its previous restart area, so in a log
  // shared with busy RMs this bounds how much of the log the TM's stream holds: about twice
  // this much (a few commits' TM records are little, but the RMs' records between them are not).
  uint64_t restart_every_log_bytes = 4 << 20;
  // Expire timeouts on a background thread. Tests turn it off and call ExpireTimeouts.
  bool timeout_thread = true;
  // Called (from the thread that expired it, no lock held) after a transaction's timeout expired
  // and its rollback started, so its owner can be told.
  std::function<void(const Guid&)> on_timeout;
};

struct ResourceManagerOptions {
  std::string name;  // stable and unique among this TM's RMs (shown in listings)
  Guid id;           // stable across restarts: the TM's records name RMs by it
  ResourceManager* callbacks = nullptr;
  // The log holding the RM's stream. When it is the TM's log, the TM's flushes cover the RM's
  // records (one flush per commit); otherwise the TM flushes it to the prepared LSNs the RMs
  // reply with, and waits for their commit records to become durable before logging the end.
  log::Log* log = nullptr;
};

struct TmStats {
  uint64_t commits = 0;
  uint64_t rollbacks = 0;
  uint64_t restart_areas = 0;
};

// The transaction manager's interface; its one implementation is in transaction_manager.cc.
class TransactionManager {
 public:
  // Opens (creating if needed) the TM's stream in `log`, which must outlive the TM.
  static Result<std::unique_ptr<TransactionManager>> Open(log::Log* log, TmOptions options = {});
  virtual ~TransactionManager() = default;
  TransactionManager(const TransactionManager&) = delete;
  TransactionManager& operator=(const TransactionManager&) = delete;

  // Rebuilds every unfinished transaction from the last restart area forward. Required once,
  // before anything else; idempotent across crashes (it writes nothing itself).
  virtual Status Recover() = 0;

  virtual Status RegisterResourceManager(const ResourceManagerOptions& options) = 0;
  // Calls `resolve` (on this thread) for each of the RM's enlistments recovery found
  // unfinished. `resolve` must make its redo or discard durable before returning OK; the TM
  // then forgets the enlistment. An error stops and is returned (call again later).
  virtual Status RecoverResourceManager(
      const Guid& rm, const std::function<Status(const InDoubtEnlistment&)>& resolve) = 0;

  virtual Result<Guid> Begin(const BeginOptions& options) = 0;
  // Joins `rm` to an active transaction (again is a no-op) and appends a record of it.
  virtual Status Enlist(const Guid& tx, const Guid& rm) = 0;
  // Replaces the enlistment's recovery bytes; they are logged and handed back by recovery.
  virtual Status SetEnlistmentInfo(const Guid& tx, const Guid& rm,
                                   std::span<const std::byte> info) = 0;

  // Both return once the outcome is final. Commit returns OK only once the transaction is
  // durably committed at every RM; any other outcome is an error that says why it rolled back
  // (ETIMEDOUT for an expired timeout, the refusing RM's status, the log's error).
  virtual Status Commit(const Guid& tx) = 0;
  virtual Status Rollback(const Guid& tx) = 0;

  // Replies to notifications (see ResourceManager).
  virtual Status PrepareComplete(const Guid& tx, const Guid& rm, const Status& result,
                                 log::Lsn durable_at = log::kInvalidLsn) = 0;
  virtual Status SinglePhaseCommitComplete(const Guid& tx, const Guid& rm,
                                           const Status& result) = 0;
  virtual Status CommitComplete(const Guid& tx, const Guid& rm,
                                log::Lsn durable_at = log::kInvalidLsn) = 0;
  virtual Status RollbackComplete(const Guid& tx, const Guid& rm) = 0;

  // For an RM's recovery: kCommit only if the TM holds a durable commit decision for `tx`.
  virtual Outcome QueryOutcome(const Guid& tx) const = 0;

  virtual std::vector<TransactionInfo> List() const = 0;
  virtual Result<TransactionInfo> Query(const Guid& tx) const = 0;

  // Rolls back every active or preparing transaction whose deadline is at or before `now`.
  virtual void ExpireTimeouts(std::chrono::steady_clock::time_point now) = 0;
  // Writes a restart area now (also done automatically, see TmOptions).
  virtual Status WriteRestartArea() = 0;
  // Writes restart areas until the stream's base is right behind the newest one, so the TM
  // holds nothing of the log before it: at mount once Recover() has run (the restart area then
  // lists the transactions in doubt, so the RMs' recovery has the log the TM held) and at a
  // clean shutdown. Two flushes.
  virtual Status Checkpoint() = 0;
  virtual TmStats stats() const = 0;
  virtual log::Stream* stream() const = 0;

 protected:
  TransactionManager() = default;
};

}  // namespace ktmfs::tm

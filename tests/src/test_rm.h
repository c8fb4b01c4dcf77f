// A resource manager for tests: a key-value store whose data lives in its own log stream, so
// that what recovery redoes or discards is observable. It records every notification it gets
// and replies synchronously, when the test says so, or from its own worker thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "log/log.h"
#include "src/transaction_manager.h"

namespace ktmfs::tm::testing {

enum class ReplyMode { kSync, kManual, kWorker };

struct SeenNotification {
  NotificationKind kind;
  Guid tx;
  TxState state;  // the transaction's state, as Query reported it while the RM was notified
};

class TestRm : public ResourceManager {
 public:
  TestRm(TransactionManager* tm, log::Log* log, log::Stream* stream, std::string name, Guid id,
         ReplyMode mode = ReplyMode::kSync);
  ~TestRm() override;

  const Guid& id() const { return id_; }
  const std::string& name() const { return name_; }
  Status Register();
  // Rebuilds the committed data from the stream and resolves unfinished transactions with the
  // TM (RecoverResourceManager, then QueryOutcome for the ones the TM no longer knows).
  Status Recover();

  // Enlists on the first write of `tx`; the write is logged (not flushed) and kept private.
  Status Write(const Guid& tx, const std::string& key, const std::string& value);

  void Notify(const Notification& n) override;
  // kManual: handles every queued notification now, on the caller's thread.
  size_t ReplyPending();
  // Waits until at least `n` notifications were seen (bounded by a generous limit).
  bool WaitForNotifications(size_t n);

  // Refuses prepare and single-phase commit from now on.
  void RefusePrepare(Status why) { refuse_ = std::move(why); }
  std::vector<SeenNotification> seen() const;
  std::vector<NotificationKind> kinds_for(const Guid& tx) const;
  std::map<std::string, std::string> data() const;
  // InDoubt items RecoverResourceManager handed out in the last Recover().
  std::vector<InDoubtEnlistment> last_in_doubt() const;

 private:
  struct Tx {
    std::vector<std::pair<std::string, std::string>> writes;
    enum { kOpen, kPrepared, kCommitted, kAborted } state = kOpen;
  };
  void Handle(const Notification& n);
  Status Append(uint16_t type, const Guid& tx, const std::string& key, const std::string& value,
                log::Lsn* lsn);
  void ApplyLocked(const Guid& tx);
  void WorkerLoop();

  TransactionManager* const tm_;
  log::Log* const log_;
  log::Stream* const stream_;
  const std::string name_;
  const Guid id_;
  const ReplyMode mode_;
  Status refuse_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<Guid, Tx> txs_;
  std::map<std::string, std::string> data_;
  std::vector<SeenNotification> seen_;
  std::deque<Notification> pending_;
  std::vector<InDoubtEnlistment> in_doubt_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace ktmfs::tm::testing

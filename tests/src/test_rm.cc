#include "tests/src/test_rm.h"

#include <chrono>

#include "src/codec.h"

namespace ktmfs::tm::testing {
namespace {

enum RecordType : uint16_t { kData = 1, kPrepared = 2, kCommitted = 3, kAborted = 4 };

}  // namespace

TestRm::TestRm(TransactionManager* tm, log::Log* log, log::Stream* stream, std::string name,
               Guid id, ReplyMode mode)
    : tm_(tm), log_(log), stream_(stream), name_(std::move(name)), id_(id), mode_(mode) {
  if (mode_ == ReplyMode::kWorker) worker_ = std::thread([this] { WorkerLoop(); });
}

TestRm::~TestRm() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Status TestRm::Register() {
  return tm_->RegisterResourceManager({name_, id_, this, log_});
}

Status TestRm::Append(uint16_t type, const Guid& tx, const std::string& key,
                      const std::string& value, log::Lsn* lsn) {
  ByteWriter w;
  w.Id(tx);
  w.Text(key);
  w.Text(value);
  log::Stream::AppendArgs args;
  args.type = type;
  args.payload = w.bytes();
  Result<log::Lsn> r = stream_->Append(args);
  if (!r.ok()) return r.status();
  if (lsn) *lsn = *r;
  return Status::Ok();
}

void TestRm::ApplyLocked(const Guid& tx) {
  Tx& t = txs_[tx];
  for (const auto& [k, v] : t.writes)
    data_[k] = v;
  t.state = Tx::kCommitted;
}

Status TestRm::Write(const Guid& tx, const std::string& key, const std::string& value) {
  bool first;
  {
    std::lock_guard l(mu_);
    first = txs_.find(tx) == txs_.end();
  }
  if (first) KTMFS_RETURN_IF_ERROR(tm_->Enlist(tx, id_));
  std::lock_guard l(mu_);
  KTMFS_RETURN_IF_ERROR(Append(kData, tx, key, value, nullptr));
  txs_[tx].writes.emplace_back(key, value);
  return Status::Ok();
}

void TestRm::Notify(const Notification& n) {
  Result<TransactionInfo> info = tm_->Query(n.transaction);
  {
    std::lock_guard l(mu_);
    seen_.push_back({n.kind, n.transaction, info.ok() ? info->state : TxState::kRolledBack});
    if (mode_ != ReplyMode::kSync) {
      pending_.push_back(n);
      cv_.notify_all();
      return;
    }
  }
  cv_.notify_all();
  Handle(n);
}

size_t TestRm::ReplyPending() {
  std::deque<Notification> batch;
  {
    std::lock_guard l(mu_);
    batch.swap(pending_);
  }
  for (const Notification& n : batch)
    Handle(n);
  return batch.size();
}

void TestRm::WorkerLoop() {
  std::unique_lock l(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(l);
      continue;
    }
    Notification n = pending_.front();
    pending_.pop_front();
    l.unlock();
    Handle(n);
    l.lock();
  }
}

bool TestRm::WaitForNotifications(size_t n) {
  std::unique_lock l(mu_);
  return cv_.wait_for(l, std::chrono::seconds(20), [&] { return seen_.size() >= n; });
}

// Replies go to the TM without mu_ held: the TM may call straight back into Notify.
void TestRm::Handle(const Notification& n) {
  const Guid& tx = n.transaction;
  log::Lsn lsn = log::kInvalidLsn;
  switch (n.kind) {
    case NotificationKind::kPrepare: {
      Status s = refuse_;
      if (s.ok()) {
        std::lock_guard l(mu_);
        s = Append(kPrepared, tx, "", "", &lsn);
        if (s.ok()) txs_[tx].state = Tx::kPrepared;
      }
      (void)tm_->PrepareComplete(tx, id_, s, lsn);
      break;
    }
    case NotificationKind::kSinglePhaseCommit: {
      Status s = refuse_;
      if (!s.ok()) {
        {
          std::lock_guard l(mu_);
          (void)Append(kAborted, tx, "", "", nullptr);
          txs_[tx].state = Tx::kAborted;
        }
        (void)tm_->SinglePhaseCommitComplete(tx, id_, s);
        break;
      }
      {
        std::lock_guard l(mu_);
        s = Append(kCommitted, tx, "", "", &lsn);
      }
      if (s.ok()) s = stream_->Flush(lsn);
      {
        std::lock_guard l(mu_);
        if (s.ok())
          ApplyLocked(tx);
        else
          txs_[tx].state = Tx::kAborted;
      }
      (void)tm_->SinglePhaseCommitComplete(tx, id_, s);
      break;
    }
    case NotificationKind::kCommit: {
      {
        std::lock_guard l(mu_);
        // A failed append leaves the commit to recovery, which the TM will hand out again.
        if (!Append(kCommitted, tx, "", "", &lsn).ok()) return;
        ApplyLocked(tx);
      }
      (void)tm_->CommitComplete(tx, id_, lsn);
      break;
    }
    case NotificationKind::kRollback: {
      {
        std::lock_guard l(mu_);
        (void)Append(kAborted, tx, "", "", nullptr);
        txs_[tx].state = Tx::kAborted;
      }
      (void)tm_->RollbackComplete(tx, id_);
      break;
    }
  }
}

Status TestRm::Recover() {
  std::lock_guard l(mu_);
  txs_.clear();
  data_.clear();
  in_doubt_.clear();
  std::vector<Guid> commit_order;
  std::unique_ptr<log::Cursor> cursor = stream_->ReadForward(stream_->base_lsn());
  log::Record rec;
  for (;;) {
    Result<bool> more = cursor->Next(&rec);
    if (!more.ok()) return more.status();
    if (!*more) break;
    ByteReader in(rec.payload);
    Guid tx;
    std::string key, value;
    if (!in.Id(&tx) || !in.Text(&key) || !in.Text(&value) || !in.done())
      return Status::Corruption(name_ + ": bad test record");
    Tx& t = txs_[tx];
    switch (rec.type) {
      case kData:
        t.writes.emplace_back(key, value);
        break;
      case kPrepared:
        t.state = Tx::kPrepared;
        break;
      case kCommitted:
        t.state = Tx::kCommitted;
        commit_order.push_back(tx);
        break;
      case kAborted:
        t.state = Tx::kAborted;
        break;
      default:
        return Status::Corruption(name_ + ": unknown test record type");
    }
  }
  for (const Guid& tx : commit_order)
    ApplyLocked(tx);

  auto resolve = [&](const Guid& tx, Outcome outcome) -> Status {
    Tx& t = txs_[tx];
    if (t.state == Tx::kCommitted) return Status::Ok();  // our own commit record decides
    if (t.state == Tx::kAborted && outcome == Outcome::kCommit)
      return Status::Corruption(name_ + ": told to commit " + tx.ToString() +
                                " which it rolled back");
    log::Lsn lsn = log::kInvalidLsn;
    if (outcome == Outcome::kCommit) {
      KTMFS_RETURN_IF_ERROR(Append(kCommitted, tx, "", "", &lsn));
      ApplyLocked(tx);
    } else {
      KTMFS_RETURN_IF_ERROR(Append(kAborted, tx, "", "", &lsn));
      t.state = Tx::kAborted;
    }
    return stream_->Flush(lsn);
  };
  KTMFS_RETURN_IF_ERROR(tm_->RecoverResourceManager(id_, [&](const InDoubtEnlistment& d) {
    in_doubt_.push_back(d);
    return resolve(d.transaction, d.outcome);
  }));
  for (auto& [tx, t] : txs_)
    if (t.state == Tx::kOpen || t.state == Tx::kPrepared)
      KTMFS_RETURN_IF_ERROR(resolve(tx, tm_->QueryOutcome(tx)));
  return Status::Ok();
}

std::vector<SeenNotification> TestRm::seen() const {
  std::lock_guard l(mu_);
  return seen_;
}

std::vector<NotificationKind> TestRm::kinds_for(const Guid& tx) const {
  std::lock_guard l(mu_);
  std::vector<NotificationKind> out;
  for (const auto& s : seen_)
    if (s.tx == tx) out.push_back(s.kind);
  return out;
}

std::map<std::string, std::string> TestRm::data() const {
  std::lock_guard l(mu_);
  return data_;
}

std::vector<InDoubtEnlistment> TestRm::last_in_doubt() const {
  std::lock_guard l(mu_);
  return in_doubt_;
}

}  // namespace ktmfs::tm::testing

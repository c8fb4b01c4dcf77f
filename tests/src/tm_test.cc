// Transaction states, notification order, replies from other threads, timeouts, listings and
// restart areas, on one multiplexed in-memory log.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "tests/src/tm_world.h"

namespace ktmfs::tm::testing {
namespace {

using K = NotificationKind;
using std::chrono::milliseconds;

std::vector<K> Kinds(std::initializer_list<K> k) {
  return k;
}

class TmTest : public ::testing::Test {
 protected:
  void Start(int rms, ReplyMode mode = ReplyMode::kSync, TmOptions o = {}) {
    world_ = std::make_unique<World>(rms, /*dedicated=*/false);
    ASSERT_TRUE(world_->Start(mode, o).ok());
  }
  TransactionManager& tm() { return world_->tm(); }
  TestRm& rm(int i) { return world_->rm(i); }
  Guid Begin(BeginOptions o = {}) {
    Result<Guid> id = tm().Begin(o);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : Guid();
  }
  TxState StateOf(const Guid& tx) {
    Result<TransactionInfo> info = tm().Query(tx);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return info.ok() ? info->state : TxState::kActive;
  }
  std::unique_ptr<World> world_;
};

TEST_F(TmTest, RecoverIsRequiredBeforeUse) {
  log::FaultInjectingStorage storage;
  auto log = log::Log::Open(&storage, World::LogOpts(), true);
  ASSERT_TRUE(log.ok());
  auto tm = TransactionManager::Open(log->get(), {});
  ASSERT_TRUE(tm.ok());
  Result<Guid> id = (*tm)->Begin({});
  EXPECT_EQ(id.status().code(), EINVAL);
  ASSERT_TRUE((*tm)->Recover().ok());
  EXPECT_EQ((*tm)->Recover().code(), EINVAL);  // only once
  EXPECT_TRUE((*tm)->Begin({}).ok());
}

TEST_F(TmTest, TransactionWithoutResourceManagersCommitsWithoutLogging) {
  Start(1);
  Guid tx = Begin();
  EXPECT_EQ(StateOf(tx), TxState::kActive);
  EXPECT_TRUE(tm().Commit(tx).ok());
  EXPECT_EQ(StateOf(tx), TxState::kCommitted);
  EXPECT_TRUE(rm(0).seen().empty());
  EXPECT_EQ(world_->log(0).stats().appends, 0u);
}

TEST_F(TmTest, OneResourceManagerGetsSinglePhaseCommit) {
  Start(1);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  uint64_t syncs = world_->syncs();
  ASSERT_TRUE(tm().Commit(tx).ok());
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kSinglePhaseCommit}));
  EXPECT_EQ(rm(0).seen()[0].state, TxState::kPreparing);
  EXPECT_EQ(StateOf(tx), TxState::kCommitted);
  EXPECT_EQ(rm(0).data().at("a"), "1");
  EXPECT_EQ(world_->syncs() - syncs, 1u) << "single-phase commit in a shared log: one flush";
}

TEST_F(TmTest, RefusedSinglePhaseCommitRollsBack) {
  Start(1);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  rm(0).RefusePrepare(Status::Error(EDQUOT, "quota"));
  Status s = tm().Commit(tx);
  EXPECT_EQ(s.code(), EDQUOT) << s.ToString();
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kSinglePhaseCommit}));
  EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  EXPECT_TRUE(rm(0).data().empty());
  EXPECT_EQ(tm().Rollback(tx).code(), EDQUOT);  // finished: the reason is kept
}

TEST_F(TmTest, TwoResourceManagersGetPrepareThenCommit) {
  Start(2);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "2").ok());
  uint64_t syncs = world_->syncs();
  ASSERT_TRUE(tm().Commit(tx).ok());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(rm(i).kinds_for(tx), Kinds({K::kPrepare, K::kCommit}));
    EXPECT_EQ(rm(i).seen()[0].state, TxState::kPreparing);
    EXPECT_EQ(rm(i).seen()[1].state, TxState::kCommitting);
  }
  EXPECT_EQ(StateOf(tx), TxState::kCommitted);
  EXPECT_EQ(rm(0).data().at("a"), "1");
  EXPECT_EQ(rm(1).data().at("b"), "2");
  EXPECT_EQ(world_->syncs() - syncs, 1u) << "prepares and decision share the decision's flush";
}

TEST_F(TmTest, RefusedPrepareRollsEveryoneBack) {
  Start(3);
  Guid tx = Begin();
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(rm(i).Write(tx, "k" + std::to_string(i), "v").ok());
  rm(1).RefusePrepare(Status::Error(ENOSPC, "rm1 is full"));
  Status s = tm().Commit(tx);
  EXPECT_EQ(s.code(), ENOSPC);
  EXPECT_NE(s.message().find("rm1 is full"), std::string::npos) << s.message();
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kPrepare, K::kRollback}));
  EXPECT_EQ(rm(1).kinds_for(tx), Kinds({K::kPrepare, K::kRollback}));
  // rm2 was never asked to prepare: the rollback overtook its queued prepare.
  EXPECT_EQ(rm(2).kinds_for(tx), Kinds({K::kRollback}));
  EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(rm(i).data().empty());
}

TEST_F(TmTest, ExplicitRollbackNotifiesEveryResourceManager) {
  Start(2);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "2").ok());
  ASSERT_TRUE(tm().Rollback(tx).ok());
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kRollback}));
  EXPECT_EQ(rm(1).kinds_for(tx), Kinds({K::kRollback}));
  EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  EXPECT_TRUE(rm(0).data().empty());
}

TEST_F(TmTest, InvalidTransitionsAreRefused) {
  Start(1);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(tm().Commit(tx).ok());
  EXPECT_EQ(tm().Commit(tx).code(), EINVAL);
  EXPECT_EQ(tm().Rollback(tx).code(), EINVAL);
  EXPECT_EQ(tm().Enlist(tx, rm(0).id()).code(), EINVAL);
  Status late = tm().CommitComplete(tx, rm(0).id());
  EXPECT_FALSE(late.ok());
  EXPECT_NE(tm().Commit(tx).message().find(tx.ToString()), std::string::npos);

  Guid unknown = Guid::Random();
  EXPECT_EQ(tm().Commit(unknown).code(), ENOENT);
  EXPECT_EQ(tm().Query(unknown).status().code(), ENOENT);
  EXPECT_EQ(tm().Enlist(Begin(), Guid::Random()).code(), ENOENT);  // unregistered RM

  Guid rolled = Begin();
  ASSERT_TRUE(tm().Rollback(rolled).ok());
  EXPECT_EQ(tm().Commit(rolled).code(), ECANCELED);

  Guid active = Begin();
  ASSERT_TRUE(rm(0).Write(active, "b", "2").ok());
  EXPECT_EQ(tm().PrepareComplete(active, rm(0).id(), Status::Ok()).code(), EINVAL);
  EXPECT_EQ(tm().RollbackComplete(active, rm(0).id()).code(), EINVAL);
  EXPECT_EQ(StateOf(active), TxState::kActive);
}

TEST_F(TmTest, RegistrationNeedsUniqueNamesAndIds) {
  Start(1);
  ResourceManagerOptions o{"rm0", Guid::Random(), &rm(0), nullptr};
  EXPECT_EQ(tm().RegisterResourceManager(o).code(), EBUSY);
  o.name = "other";
  o.id = rm(0).id();
  EXPECT_EQ(tm().RegisterResourceManager(o).code(), EBUSY);
  o.callbacks = nullptr;
  EXPECT_EQ(tm().RegisterResourceManager(o).code(), EINVAL);
}

TEST_F(TmTest, RepliesLaterFromAnotherThread) {
  Start(2, ReplyMode::kManual);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "2").ok());
  Status result = Status::IoError("not finished");
  std::thread committer([&] { result = tm().Commit(tx); });
  ASSERT_TRUE(rm(0).WaitForNotifications(1));
  ASSERT_TRUE(rm(1).WaitForNotifications(1));
  EXPECT_EQ(StateOf(tx), TxState::kPreparing);
  EXPECT_EQ(rm(0).ReplyPending(), 1u);
  EXPECT_EQ(StateOf(tx), TxState::kPreparing);  // still waiting for rm1
  EXPECT_EQ(rm(1).ReplyPending(), 1u);          // the last prepare: decision, then commits
  ASSERT_TRUE(rm(0).WaitForNotifications(2));
  ASSERT_TRUE(rm(1).WaitForNotifications(2));
  EXPECT_EQ(StateOf(tx), TxState::kCommitting);
  EXPECT_EQ(tm().QueryOutcome(tx), Outcome::kCommit);
  rm(0).ReplyPending();
  rm(1).ReplyPending();
  committer.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_EQ(StateOf(tx), TxState::kCommitted);
}

TEST_F(TmTest, WorkerThreadRepliesDriveTheProtocol) {
  Start(3, ReplyMode::kWorker);
  for (int n = 0; n < 20; ++n) {
    Guid tx = Begin();
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(rm(i).Write(tx, "k" + std::to_string(n), std::to_string(i)).ok());
    ASSERT_TRUE(tm().Commit(tx).ok());
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(rm(i).kinds_for(tx), Kinds({K::kPrepare, K::kCommit}));
  }
  EXPECT_EQ(rm(2).data().size(), 20u);
}

TEST_F(TmTest, TimeoutRollsBackAndTellsEveryone) {
  std::vector<Guid> expired;
  TmOptions o;
  o.timeout_thread = false;
  o.on_timeout = [&](const Guid& id) { expired.push_back(id); };
  Start(2, ReplyMode::kSync, o);
  Guid tx = Begin(TxOptions(1000, "t", milliseconds(50)));
  Guid other = Begin(TxOptions(0, "", std::chrono::hours(1)));
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "1").ok());
  tm().ExpireTimeouts(std::chrono::steady_clock::now() + std::chrono::minutes(1));
  EXPECT_EQ(expired, std::vector<Guid>{tx});
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kRollback}));
  EXPECT_EQ(rm(1).kinds_for(tx), Kinds({K::kRollback}));
  EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  EXPECT_EQ(tm().Commit(tx).code(), ETIMEDOUT);
  EXPECT_EQ(StateOf(other), TxState::kActive);
}

TEST_F(TmTest, TimeoutDuringPrepareRollsBackAndIgnoresTheLateReply) {
  TmOptions o;
  o.timeout_thread = false;
  Start(2, ReplyMode::kManual, o);
  Guid tx = Begin(TxOptions(0, "", milliseconds(10)));
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "1").ok());
  Status result;
  std::thread committer([&] { result = tm().Commit(tx); });
  ASSERT_TRUE(rm(0).WaitForNotifications(1));
  ASSERT_TRUE(rm(1).WaitForNotifications(1));
  tm().ExpireTimeouts(std::chrono::steady_clock::now() + std::chrono::minutes(1));
  EXPECT_EQ(StateOf(tx), TxState::kRollingBack);
  // The rollback may be handed over by the committer's thread, still delivering the prepares.
  ASSERT_TRUE(rm(0).WaitForNotifications(2));
  ASSERT_TRUE(rm(1).WaitForNotifications(2));
  rm(0).ReplyPending();  // answers prepare (ignored), then rollback
  rm(1).ReplyPending();
  committer.join();
  EXPECT_EQ(result.code(), ETIMEDOUT) << result.ToString();
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kPrepare, K::kRollback}));
  EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  EXPECT_TRUE(rm(0).data().empty());
}

TEST_F(TmTest, TimeoutThreadExpiresTransactions) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Guid> expired;
  TmOptions o;
  o.on_timeout = [&](const Guid& id) {
    std::lock_guard l(mu);
    expired.push_back(id);
    cv.notify_all();
  };
  Start(1, ReplyMode::kSync, o);
  Guid tx = Begin(TxOptions(0, "", milliseconds(1)));
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  std::unique_lock l(mu);
  ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(20), [&] { return !expired.empty(); }));
  EXPECT_EQ(expired[0], tx);
  EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kRollback}));
}

TEST_F(TmTest, ListsTransactionsWithOwnerStateResourceManagersAndDescription) {
  Start(2);
  Guid a = Begin(TxOptions(1000, "deploy"));
  Guid b = Begin(TxOptions(0, "other", std::chrono::hours(1)));
  ASSERT_TRUE(rm(0).Write(a, "x", "1").ok());
  ASSERT_TRUE(rm(1).Write(a, "y", "1").ok());
  std::vector<TransactionInfo> list = tm().List();
  ASSERT_EQ(list.size(), 2u);
  const TransactionInfo& ia = list[0].id == a ? list[0] : list[1];
  const TransactionInfo& ib = list[0].id == a ? list[1] : list[0];
  EXPECT_EQ(ia.owner, 1000u);
  EXPECT_EQ(ia.description, "deploy");
  EXPECT_EQ(ia.state, TxState::kActive);
  EXPECT_EQ(ia.resource_managers, (std::vector<std::string>{"rm0", "rm1"}));
  EXPECT_FALSE(ia.timeout.has_value());
  EXPECT_EQ(ib.id, b);
  EXPECT_EQ(ib.timeout, std::chrono::hours(1));
  EXPECT_TRUE(ib.resource_managers.empty());
  ASSERT_TRUE(tm().Commit(a).ok());
  EXPECT_EQ(tm().List().size(), 1u);
}

TEST_F(TmTest, EnlistmentInfoComesBackThroughRecovery) {
  Start(2, ReplyMode::kManual);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "2").ok());
  std::string info = "undo at offset 42";
  ASSERT_TRUE(tm().SetEnlistmentInfo(tx, rm(1).id(), std::as_bytes(std::span(info))).ok());
  std::thread committer([&] { (void)tm().Commit(tx); });
  ASSERT_TRUE(rm(0).WaitForNotifications(1));
  ASSERT_TRUE(rm(1).WaitForNotifications(1));
  rm(0).ReplyPending();
  rm(1).ReplyPending();  // decision durable; commit notifications queued, never answered
  ASSERT_TRUE(rm(0).WaitForNotifications(2));
  ASSERT_TRUE(rm(1).WaitForNotifications(2));
  ASSERT_EQ(StateOf(tx), TxState::kCommitting);
  world_->storage(0).CrashNow(log::CrashMode::kDropUnsynced);
  rm(0).ReplyPending();  // the crash cuts these replies off; the committer returns
  rm(1).ReplyPending();
  committer.join();
  world_->CrashAndRestart(log::CrashMode::kDropUnsynced);
  ASSERT_TRUE(world_->Start().ok());
  auto in_doubt = world_->rm(1).last_in_doubt();
  ASSERT_EQ(in_doubt.size(), 1u);
  EXPECT_EQ(in_doubt[0].transaction, tx);
  EXPECT_EQ(in_doubt[0].outcome, Outcome::kCommit);
  EXPECT_EQ(
      std::string(reinterpret_cast<const char*>(in_doubt[0].info.data()), in_doubt[0].info.size()),
      info);
  EXPECT_EQ(world_->rm(0).data().at("a"), "1");
  EXPECT_EQ(world_->rm(1).data().at("b"), "2");
  EXPECT_TRUE(world_->tm().List().empty());
}

TEST_F(TmTest, RestartAreasBoundTheStreamAndRecoveryStillWorks) {
  TmOptions o;
  o.restart_every_commits = 10;
  Start(2, ReplyMode::kSync, o);
  log::Stream* stream = tm().stream();
  log::Lsn first_base = stream->base_lsn();
  Guid open_tx = Begin();  // spans every restart area
  ASSERT_TRUE(rm(0).Write(open_tx, "open", "x").ok());
  ASSERT_TRUE(rm(1).Write(open_tx, "open", "x").ok());
  for (int n = 0; n < 100; ++n) {
    Guid tx = Begin();
    ASSERT_TRUE(rm(0).Write(tx, "k" + std::to_string(n), "v").ok());
    ASSERT_TRUE(rm(1).Write(tx, "k" + std::to_string(n), "v").ok());
    ASSERT_TRUE(tm().Commit(tx).ok());
  }
  EXPECT_GE(tm().stats().restart_areas, 9u);
  EXPECT_GT(stream->base_lsn(), first_base);
  // Only the records since the previous restart area remain to be read at recovery.
  size_t records = 0;
  auto cursor = stream->ReadForward(stream->base_lsn());
  log::Record r;
  while (*cursor->Next(&r))
    ++records;
  EXPECT_LT(records, 60u);

  world_->CrashAndRestart(log::CrashMode::kDropUnsynced);
  ASSERT_TRUE(world_->Start().ok());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(world_->rm(i).data().size(), 100u);
    EXPECT_EQ(world_->rm(i).data().count("open"), 0u);
  }
  EXPECT_TRUE(world_->tm().List().empty());
}

// Single-phase commits log next to nothing in the TM's stream, yet until its base moves the
// TM holds every other stream's records after it: restart areas follow the whole log's growth.
TEST_F(TmTest, RestartAreasFollowTheGrowthOfTheWholeLog) {
  TmOptions o;
  o.restart_every_log_bytes = 64 << 10;
  Start(1, ReplyMode::kSync, o);
  log::Stream* stream = tm().stream();
  Result<log::Stream*> other = world_->log(0).OpenStream("other", true);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  const std::vector<std::byte> filler(8 << 10, std::byte{7});
  const log::Lsn first_base = stream->base_lsn();
  for (int n = 0; n < 40; ++n) {
    Guid tx = Begin();
    ASSERT_TRUE(rm(0).Write(tx, "k" + std::to_string(n), "v").ok());
    ASSERT_TRUE(tm().Commit(tx).ok());
    Result<log::Lsn> lsn = (*other)->Append({.type = 1, .payload = filler});
    ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
    ASSERT_TRUE((*other)->SetBaseLsn(*lsn).ok());
  }
  EXPECT_GE(tm().stats().restart_areas, 3u);
  EXPECT_GT(stream->base_lsn(), first_base);
  // The TM holds at most about two periods of the log.
  EXPECT_LT(world_->log(0).end_lsn() - stream->base_lsn(), 3u * (64 << 10));
  EXPECT_EQ(tm().stats().commits, 40u);
}

// A log filled by one long piece of work, with no transaction ending meanwhile: when one ends,
// the TM's base must come up to the log's end, not to its previous restart area, which is as
// far back as where the work began. Otherwise a log that was full stays full once the work has
// ended, with nothing left to end and write the next restart area.
TEST_F(TmTest, AnEndAfterLongGrowthBringsTheBaseUpToTheEnd) {
  TmOptions o;
  o.restart_every_log_bytes = 64 << 10;
  Start(1, ReplyMode::kSync, o);
  log::Stream* stream = tm().stream();
  ASSERT_TRUE(tm().Checkpoint().ok());
  Result<log::Stream*> other = world_->log(0).OpenStream("other", true);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  const std::vector<std::byte> filler(8 << 10, std::byte{7});
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "k", "v").ok());
  for (int n = 0; n < 40; ++n) {  // five periods
    Result<log::Lsn> lsn = (*other)->Append({.type = 1, .payload = filler});
    ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
    ASSERT_TRUE((*other)->SetBaseLsn(*lsn).ok());
  }
  ASSERT_TRUE(tm().Commit(tx).ok());
  EXPECT_LT(world_->log(0).end_lsn() - stream->base_lsn(), 16u << 10);
}

// At mount and at a clean shutdown the TM leaves nothing of the log before its newest restart
// area but the one before it, and a live transaction survives in it.
TEST_F(TmTest, CheckpointLeavesTheBaseRightBehindTheNewestRestartArea) {
  Start(1);
  log::Stream* stream = tm().stream();
  Guid open_tx = Begin();
  ASSERT_TRUE(rm(0).Write(open_tx, "open", "x").ok());
  for (int n = 0; n < 5; ++n) {
    Guid tx = Begin();
    ASSERT_TRUE(rm(0).Write(tx, "k" + std::to_string(n), "v").ok());
    ASSERT_TRUE(tm().Commit(tx).ok());
  }
  const log::Lsn before = stream->base_lsn();
  ASSERT_TRUE(tm().Checkpoint().ok());
  EXPECT_EQ(tm().stats().restart_areas, 2u);
  EXPECT_GT(stream->base_lsn(), before);
  size_t records = 0;
  auto cursor = stream->ReadForward(stream->base_lsn());
  log::Record r;
  while (*cursor->Next(&r)) {
    EXPECT_EQ(r.type, log::kRestartAreaRecordType);
    ++records;
  }
  EXPECT_EQ(records, 2u);
  world_->CrashAndRestart(log::CrashMode::kDropUnsynced);
  ASSERT_TRUE(world_->Start().ok());
  EXPECT_EQ(world_->rm(0).data().size(), 5u);
  EXPECT_EQ(world_->rm(0).data().count("open"), 0u);
  EXPECT_EQ(world_->rm(0).last_in_doubt().size(), 1u);  // the live one, from the restart area
  EXPECT_TRUE(world_->tm().List().empty());
}

// A failed decision flush never acknowledges. Either the TM makes an abort record durable and
// rolls everyone back, or (a log that refuses all writes after a failed one) the outcome is
// unknown and the TM refuses further work; recovery then resolves it the same way at every RM.
TEST_F(TmTest, FailedDecisionFlushNeverAcknowledges) {
  Start(2);
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "1").ok());
  // The next write or sync is the decision's flush.
  world_->storage(0).FailAtEvent(world_->storage(0).events() + 1, EIO);
  Status s = tm().Commit(tx);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(tx.ToString()), std::string::npos) << s.message();
  if (s.message().find("unknown") != std::string::npos) {
    // Neither committed nor rolled back: the caller is told exactly that.
    EXPECT_EQ(s.code(), kOutcomeUnknownErrno) << s.ToString();
    EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kPrepare}));  // nobody is told anything
    EXPECT_EQ(tm().Begin({}).status().code(), EIO);
  } else {
    EXPECT_EQ(s.code(), EIO) << s.ToString();
    EXPECT_EQ(rm(0).kinds_for(tx), Kinds({K::kPrepare, K::kRollback}));
    EXPECT_EQ(StateOf(tx), TxState::kRolledBack);
  }
  EXPECT_TRUE(rm(0).data().empty());
  world_->CrashAndRestart(log::CrashMode::kKeepRandomUnsynced);
  ASSERT_TRUE(world_->Start().ok());
  EXPECT_EQ(world_->rm(0).data().count("a"), world_->rm(1).data().count("b"));
  EXPECT_TRUE(world_->tm().List().empty());
}

// A damaged newest restart area (not a torn tail: durable records follow it). Recovery falls back
// to the previous restart area, but the damaged range may have held any record, so replaying past
// it is refused with an error naming the stream and LSN; nothing is applied.
TEST_F(TmTest, DamagedRestartAreaStopsRecoveryWithAClearError) {
  Start(2);
  Guid open_tx = Begin();  // unfinished, in both restart areas
  ASSERT_TRUE(rm(0).Write(open_tx, "open", "x").ok());
  ASSERT_TRUE(rm(1).Write(open_tx, "open", "x").ok());
  ASSERT_TRUE(tm().WriteRestartArea().ok());
  Guid tx = Begin();
  ASSERT_TRUE(rm(0).Write(tx, "a", "1").ok());
  ASSERT_TRUE(rm(1).Write(tx, "b", "1").ok());
  ASSERT_TRUE(tm().Commit(tx).ok());
  ASSERT_TRUE(tm().WriteRestartArea().ok());
  Result<log::Record> newest = tm().stream()->ReadRestartArea();
  ASSERT_TRUE(newest.ok());
  Guid later = Begin();  // durable records after it: the damage is not a torn tail
  ASSERT_TRUE(rm(0).Write(later, "c", "1").ok());
  ASSERT_TRUE(rm(1).Write(later, "d", "1").ok());
  ASSERT_TRUE(tm().Commit(later).ok());
  world_->CrashAndRestart(log::CrashMode::kDropUnsynced);

  // Flip a byte inside the newest restart area's payload.
  const uint64_t container_size = World::LogOpts().container_size;
  std::string file;
  {
    char name[32];
    // Logical containers are numbered from 1; a young log has not wrapped its ring.
    std::snprintf(name, sizeof name, "container.%06u",
                  static_cast<unsigned>(newest->lsn / container_size - 1));
    file = name;
  }
  std::vector<std::byte> contents = world_->storage(0).Contents(file);
  ASSERT_FALSE(contents.empty()) << file;
  uint64_t at = newest->lsn % container_size + 80;  // past the fragment and record headers
  ASSERT_LT(at, contents.size());
  contents[at] ^= std::byte{0xff};
  world_->storage(0).SetContents(file, contents);

  Status s = world_->Start();
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("stream tm"), std::string::npos) << s.message();
  char lsn[32];
  std::snprintf(lsn, sizeof lsn, "0x%llx", static_cast<unsigned long long>(newest->lsn));
  EXPECT_NE(s.message().find(lsn), std::string::npos) << s.message();
}

}  // namespace
}  // namespace ktmfs::tm::testing

// The protocol rules of `ktmfs-log check` on synthetic record sequences: the courses the TM
// and the filesystem RM really log pass, and each kind of break is reported with stream, LSN
// and transaction.
#include "tools/log_check.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "fs/tx/records.h"
#include "src/tm_records.h"
#include "tools/log_salvage.h"

namespace ktmfs::logcheck {
namespace {

using tm::TmRecordType;
using Fs = fstx::RecordType;

constexpr log::StreamId kTm = 1, kRoot = 2, kData = 3;
constexpr log::Lsn kStart = 0x100000;

const Guid kRootRm = *Guid::Parse("00000000-0000-4000-8000-0000000000aa");
const Guid kDataRm = *Guid::Parse("00000000-0000-4000-8000-0000000000bb");

Guid Tx(int n) {
  char text[40];
  std::snprintf(text, sizeof text, "0a1b2c3d-0000-4000-8000-%012d", n);
  return *Guid::Parse(text);
}

// A log of three streams: the TM's, and two fs RMs' ("root" and "data"), records appended in
// the order the calls are made.
class Log {
 public:
  log::Lsn Add(log::StreamId stream, uint16_t type, std::vector<std::byte> payload) {
    log::Record r;
    r.lsn = next_;
    r.stream = stream;
    r.type = type;
    r.payload = std::move(payload);
    next_ += 0x40;
    records_.push_back(r);
    return r.lsn;
  }
  log::Lsn Enlist(const Guid& tx, const Guid& rm = kRootRm) {
    tm::TxImage image{tx, 1000, "", tm::Decision::kNone, {}};
    tm::EnlistmentImage e{rm, rm == kRootRm ? "root" : "data", {}};
    return Add(kTm, uint16_t(TmRecordType::kEnlist), tm::EncodeEnlist(image, e));
  }
  log::Lsn Commit(const Guid& tx, std::vector<Guid> rms) {
    tm::TxImage image{tx, 1000, "", tm::Decision::kCommit, {}};
    for (const Guid& rm : rms)
      image.enlistments.push_back({rm, rm == kRootRm ? "root" : "data", {}});
    return Add(kTm, uint16_t(TmRecordType::kCommit), tm::EncodeCommit(image));
  }
  log::Lsn Abort(const Guid& tx) {
    return Add(kTm, uint16_t(TmRecordType::kAbort), tm::EncodeTxId(tx));
  }
  log::Lsn End(const Guid& tx) {
    return Add(kTm, uint16_t(TmRecordType::kEnd), tm::EncodeTxId(tx));
  }
  log::Lsn TmRestart(std::vector<tm::TxImage> live) {
    tm_restart_ = Add(kTm, log::kRestartAreaRecordType, tm::EncodeRestartArea(live));
    return tm_restart_;
  }
  log::Lsn Fs(const Guid& tx, Fs type, uint64_t op_count = 0, log::StreamId stream = kRoot) {
    fstx::Record r;
    r.type = type;
    r.tx = tx;
    r.op.kind = fstx::OpKind::kMkdir;
    r.op.path = "d";
    r.op_count = op_count;
    // RELOGGED carries op_count ops (PREPARED counts them).
    if (type == Fs::kRelogged) r.ops.assign(op_count, r.op);
    return Add(stream, fstx::kFsRecordType, fstx::EncodeRecord(r));
  }

  // Stream bases default to the start of the log (`fs_base` moves both fs RMs'); the restart LSN of
  // the TM's stream to its newest restart area; last LSNs to what was added.
  CheckReport Check(log::Lsn fs_base = kStart, std::optional<log::Lsn> tm_restart = std::nullopt) {
    std::vector<log::StreamInfo> infos = {
        {kTm, "tm", kStart, tm_restart.value_or(tm_restart_), log::kInvalidLsn},
        {kRoot, "fs.root", fs_base, log::kInvalidLsn, log::kInvalidLsn},
        {kData, "fs.data", fs_base, log::kInvalidLsn, log::kInvalidLsn}};
    for (const auto& r : records_)
      infos[r.stream - 1].last_lsn = r.lsn;
    ProtocolChecker c(infos, kStart);
    for (const auto& r : records_) {
      if (damage_at_ && r.lsn >= *damage_at_) {
        c.Damaged(*damage_at_, *damage_at_ + 0x40);
        damage_at_.reset();
      }
      c.Add(r);
    }
    return c.Finish();
  }
  // What salvage would lose: the transactions (their last 12 digits) and whether committed.
  std::vector<std::string> Salvage() {
    std::vector<log::StreamInfo> infos = {
        {kTm, "tm", kStart, tm_restart_, log::kInvalidLsn},
        {kRoot, "fs.root", kStart, log::kInvalidLsn, log::kInvalidLsn},
        {kData, "fs.data", kStart, log::kInvalidLsn, log::kInvalidLsn}};
    salvage::SalvagePlanner p(infos);
    bool pending = damage_at_.has_value();
    const log::Lsn damage = damage_at_.value_or(log::kInvalidLsn);
    for (const auto& r : records_) {
      if (pending && r.lsn >= damage) {
        p.Damaged(damage, damage + 0x40);
        pending = false;
      }
      p.Add(r);
    }
    if (pending) p.Damaged(damage, damage + 0x40);
    std::vector<std::string> out;
    for (const auto& l : p.Finish().lost)
      out.push_back(l.tx.ToString().substr(24) + (l.committed ? " committed" : " uncommitted"));
    return out;
  }
  // The next record follows damage: the checker is told so before it.
  void DamageHere() { damage_at_ = next_; }
  log::Lsn next() const { return next_; }

 private:
  log::Lsn next_ = kStart;
  log::Lsn tm_restart_ = log::kInvalidLsn;
  std::optional<log::Lsn> damage_at_;
  std::vector<log::Record> records_;
};

std::vector<std::string> Violations(const CheckReport& r) {
  std::vector<std::string> out;
  for (const auto& v : r.violations)
    out.push_back(ToString(v));
  return out;
}

std::vector<std::string> InFlight(const CheckReport& r) {
  std::vector<std::string> out;
  for (const auto& f : r.in_flight)
    out.push_back(ToString(f));
  return out;
}

std::string At(const char* stream, log::Lsn lsn, const Guid& tx, const std::string& what) {
  return std::string("stream ") + stream + " LSN " + log::LsnToString(lsn) + " tx " +
         tx.ToString() + ": " + what;
}

TEST(LogCheck, SinglePhaseCommitIsSound) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kPrepared, 2);
  l.Fs(Tx(1), Fs::kCommitted);
  l.End(Tx(1));
  // Applied in the background, after the commit was acknowledged and ended.
  l.Fs(Tx(1), Fs::kApplied);
  CheckReport r = l.Check();
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
  EXPECT_EQ(InFlight(r), std::vector<std::string>{});
  EXPECT_EQ(r.records, 7u);
  EXPECT_EQ(r.transactions, 1u);
}

TEST(LogCheck, TwoPhaseCommitIsSound) {
  Log l;
  l.Enlist(Tx(1), kRootRm);
  l.Enlist(Tx(1), kDataRm);
  l.Fs(Tx(1), Fs::kOp, 0, kRoot);
  l.Fs(Tx(1), Fs::kPrepared, 1, kRoot);
  l.Fs(Tx(1), Fs::kPrepared, 0, kData);
  l.Commit(Tx(1), {kRootRm, kDataRm});
  l.Fs(Tx(1), Fs::kCommitted, 0, kRoot);
  l.Fs(Tx(1), Fs::kApplied, 0, kRoot);
  l.Fs(Tx(1), Fs::kCommitted, 0, kData);
  l.Fs(Tx(1), Fs::kApplied, 0, kData);
  l.End(Tx(1));
  CheckReport r = l.Check();
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
  EXPECT_EQ(InFlight(r), std::vector<std::string>{});
}

TEST(LogCheck, RollbacksAreSound) {
  Log l;
  // Rolled back with work logged, after a refused prepare, and an enlistment that only locked.
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kAborted);
  l.End(Tx(1));
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kOp);
  l.Fs(Tx(2), Fs::kPrepared, 1);
  l.Fs(Tx(2), Fs::kAborted);
  l.End(Tx(2));
  l.Enlist(Tx(3));
  l.Fs(Tx(3), Fs::kAborted);
  // Recovery rolls back again what the TM still held in doubt (its END was lost).
  l.Fs(Tx(3), Fs::kAborted);
  l.End(Tx(3));
  // A decision whose flush failed, overridden by ABORT.
  l.Enlist(Tx(4), kRootRm);
  l.Enlist(Tx(4), kDataRm);
  l.Fs(Tx(4), Fs::kPrepared, 0, kRoot);
  l.Fs(Tx(4), Fs::kPrepared, 0, kData);
  l.Commit(Tx(4), {kRootRm, kDataRm});
  l.Abort(Tx(4));
  l.Fs(Tx(4), Fs::kAborted, 0, kRoot);
  l.Fs(Tx(4), Fs::kAborted, 0, kData);
  l.End(Tx(4));
  CheckReport r = l.Check();
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
  EXPECT_EQ(InFlight(r), std::vector<std::string>{});
  EXPECT_EQ(r.transactions, 4u);
}

TEST(LogCheck, InFlightAtTheEndIsListedNotAnError) {
  Log l;
  // Unfinished: recovery rolls it back.
  const log::Lsn first1 = l.Enlist(Tx(1));
  const log::Lsn op1 = l.Fs(Tx(1), Fs::kOp);
  // Committed by its single RM, apply and END pending (a crash right after the flush).
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kPrepared);
  l.Fs(Tx(2), Fs::kCommitted);
  // Two-phase, decided: the RMs have yet to hear.
  l.Enlist(Tx(3), kRootRm);
  l.Enlist(Tx(3), kDataRm);
  l.Fs(Tx(3), Fs::kPrepared, 0, kRoot);
  l.Fs(Tx(3), Fs::kPrepared, 0, kData);
  l.Commit(Tx(3), {kRootRm, kDataRm});
  CheckReport r = l.Check();
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
  EXPECT_EQ(InFlight(r), (std::vector<std::string>{
                             "stream fs.data tx " + Tx(3).ToString() + ": prepared, unfinished",
                             "stream fs.root tx " + Tx(1).ToString() + ": unfinished",
                             "stream fs.root tx " + Tx(2).ToString() + ": committed, apply pending",
                             "stream fs.root tx " + Tx(3).ToString() + ": prepared, unfinished",
                             "stream tm tx " + Tx(1).ToString() + ": unfinished",
                             "stream tm tx " + Tx(2).ToString() +
                                 ": committed by its rm (single phase), end pending",
                             "stream tm tx " + Tx(3).ToString() + ": committed, end pending",
                         }));
  ASSERT_FALSE(r.in_flight.empty());
  EXPECT_EQ(r.in_flight[4].first, first1);
  EXPECT_EQ(r.in_flight[1].first, op1);
}

// What recovery will do, per transaction: redo what its RM or the TM decided to commit, roll back
// the rest (presumed abort), and finish what the TM alone still holds.
TEST(LogCheck, RecoveryPlanFollowsTheDecisions) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);  // unfinished
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kPrepared);
  l.Fs(Tx(2), Fs::kCommitted);  // single phase: its RM decided
  l.Enlist(Tx(3), kRootRm);
  l.Enlist(Tx(3), kDataRm);
  l.Fs(Tx(3), Fs::kPrepared, 0, kRoot);
  l.Fs(Tx(3), Fs::kPrepared, 0, kData);
  l.Commit(Tx(3), {kRootRm, kDataRm});  // two phase: the TM decided
  l.Enlist(Tx(4), kRootRm);
  l.Enlist(Tx(4), kDataRm);
  l.Fs(Tx(4), Fs::kPrepared, 0, kRoot);  // prepared, never decided
  l.Enlist(Tx(5));
  l.Fs(Tx(5), Fs::kPrepared);
  l.Fs(Tx(5), Fs::kCommitted);
  l.Fs(Tx(5), Fs::kApplied);  // applied, END not logged
  std::vector<std::string> plan;
  for (const auto& p : l.Check().plan) {
    plan.push_back(std::string(ActionName(p.action)) + " " + p.tx.ToString().substr(24) + " " +
                   p.stream + (p.owner_known ? " uid " + std::to_string(p.owner) : ""));
  }
  EXPECT_EQ(plan, (std::vector<std::string>{
                      "roll back 000000000001 fs.root uid 1000",
                      "apply 000000000002 fs.root uid 1000",
                      "apply 000000000003 fs.root uid 1000",
                      "roll back 000000000004 fs.root uid 1000",
                      "apply 000000000003 fs.data uid 1000",
                      "finish 000000000005 tm uid 1000",
                  }));
}

// Salvage keeps what the damage left whole and loses what it may have cut (tools/log_salvage.h).
TEST(LogSalvage, KeepsWholeTransactionsAndLosesCutOnes) {
  Log l;
  l.Enlist(Tx(1));  // finished before the damage: kept
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kPrepared, 1);
  l.Fs(Tx(1), Fs::kCommitted);
  l.Fs(Tx(1), Fs::kApplied);
  l.End(Tx(1));
  l.Enlist(Tx(2));  // committed, one of its two OPs in the damage: lost
  l.Fs(Tx(2), Fs::kOp);
  l.Enlist(Tx(3));  // prepared, its decision may be in the damage: lost
  l.Fs(Tx(3), Fs::kOp);
  l.Fs(Tx(3), Fs::kPrepared, 1);
  l.Enlist(Tx(4));  // ended, every record of it in fs.root lost: lost, maybe pending
  l.Enlist(Tx(5));  // unfinished, begun before the damage: its PREPARED may be in it
  l.Fs(Tx(5), Fs::kOp);
  l.Enlist(Tx(8));       // committed whole, its APPLIED may be in the damage: a redo could undo
  l.Fs(Tx(8), Fs::kOp);  // later commits over it, so lost
  l.Fs(Tx(8), Fs::kPrepared, 1);
  l.Fs(Tx(8), Fs::kCommitted);
  l.DamageHere();
  l.End(Tx(4));
  l.Fs(Tx(2), Fs::kPrepared, 2);
  l.Fs(Tx(2), Fs::kCommitted);
  l.Enlist(Tx(6));  // begun after the damage, committed whole: kept, redone
  l.Fs(Tx(6), Fs::kOp);
  l.Fs(Tx(6), Fs::kPrepared, 1);
  l.Fs(Tx(6), Fs::kCommitted);
  l.Enlist(Tx(7));  // unfinished after the damage: kept, rolled back
  l.Fs(Tx(7), Fs::kOp);
  EXPECT_EQ(l.Salvage(), (std::vector<std::string>{
                             "000000000002 committed",
                             "000000000003 uncommitted",
                             "000000000004 committed",
                             "000000000005 uncommitted",
                             "000000000008 committed",
                         }));
}

// With dedicated logs the TM's log holds no fs stream: an ended transaction is not lost for want
// of RM records that live in another log; one without END whose decision may be in the damage
// is reported (its RM's log would presume an abort).
TEST(LogSalvage, RmStreamsInAnotherLog) {
  std::vector<log::StreamInfo> infos = {{kTm, "tm", kStart, log::kInvalidLsn, log::kInvalidLsn}};
  salvage::SalvagePlanner p(infos);
  log::Lsn lsn = kStart;
  auto add = [&](TmRecordType type, std::vector<std::byte> payload) {
    log::Record r;
    r.lsn = lsn;
    r.stream = kTm;
    r.type = uint16_t(type);
    r.payload = std::move(payload);
    lsn += 0x40;
    p.Add(r);
  };
  for (int n : {1, 2})
    add(TmRecordType::kEnlist,
        tm::EncodeEnlist({Tx(n), 1000, "", tm::Decision::kNone, {}}, {kRootRm, "root", {}}));
  add(TmRecordType::kEnd, tm::EncodeTxId(Tx(1)));
  p.Damaged(lsn, lsn + 0x40);
  const auto lost = p.Finish().lost;
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].tx, Tx(2));
}

TEST(LogSalvage, NothingIsLostWithoutDamage) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kPrepared, 1);
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kOp);
  EXPECT_EQ(l.Salvage(), std::vector<std::string>{});
}

TEST(LogCheck, FsStepsOutOfOrder) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kPrepared, 1);
  const log::Lsn applied = l.Fs(Tx(1), Fs::kApplied);
  const log::Lsn op = l.Fs(Tx(1), Fs::kOp);
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kOp);
  const log::Lsn committed = l.Fs(Tx(2), Fs::kCommitted);
  const log::Lsn aborted = l.Fs(Tx(2), Fs::kAborted);
  l.Enlist(Tx(3));
  l.Fs(Tx(3), Fs::kOp);
  const log::Lsn prepared = l.Fs(Tx(3), Fs::kPrepared, 2);
  CheckReport r = l.Check();
  EXPECT_EQ(
      Violations(r),
      (std::vector<std::string>{
          At("fs.root", applied, Tx(1), "APPLIED without COMMITTED"),
          At("fs.root", op, Tx(1), "OP after APPLIED"),
          At("fs.root", committed, Tx(2), "COMMITTED without PREPARED"),
          At("fs.root", aborted, Tx(2), "ABORTED after COMMITTED"),
          At("fs.root", prepared, Tx(3), "PREPARED counts 2 OP record(s), the stream holds 1"),
      }));
}

// A live transaction carried forward: the ops of its RELOGGED record replace those before it,
// also where the stream's base has passed them; none may follow its PREPARED.
TEST(LogCheck, CarriedForwardOpsReplaceTheEarlierOnes) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kOp);
  const log::Lsn base = l.next();
  l.Fs(Tx(1), Fs::kRelogged, 2);
  l.Fs(Tx(1), Fs::kOp);
  l.Fs(Tx(1), Fs::kPrepared, 3);
  l.Fs(Tx(1), Fs::kCommitted);
  l.End(Tx(1));
  l.Fs(Tx(1), Fs::kApplied);
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kOp);
  l.Fs(Tx(2), Fs::kPrepared, 1);
  const log::Lsn late = l.Fs(Tx(2), Fs::kRelogged, 1);
  EXPECT_EQ(Violations(l.Check()),
            std::vector<std::string>{At("fs.root", late, Tx(2), "RELOGGED after PREPARED")});
  EXPECT_EQ(Violations(l.Check(base)),
            std::vector<std::string>{At("fs.root", late, Tx(2), "RELOGGED after PREPARED")});
  EXPECT_EQ(l.Salvage(), std::vector<std::string>{});
}

TEST(LogCheck, TmStepsOutOfOrder) {
  Log l;
  const log::Lsn abort = l.Abort(Tx(1));
  l.Enlist(Tx(2));
  const log::Lsn single = l.Commit(Tx(2), {kRootRm});
  const log::Lsn enlist = l.Enlist(Tx(2), kDataRm);
  l.Fs(Tx(2), Fs::kPrepared);
  l.Fs(Tx(2), Fs::kCommitted);
  const log::Lsn first_end = l.End(Tx(2));
  const log::Lsn end = l.End(Tx(2));
  const log::Lsn commit = l.Commit(Tx(3), {kRootRm, kDataRm});
  CheckReport r = l.Check();
  EXPECT_EQ(
      Violations(r),
      (std::vector<std::string>{
          At("tm", abort, Tx(1), "ABORT without COMMIT"),
          At("tm", single, Tx(2), "COMMIT of a single rm (root): a single-phase commit logs none"),
          At("tm", enlist, Tx(2), "ENLIST after COMMIT"),
          At("tm", first_end, Tx(2), "END, yet rm data logged nothing of it in fs.data"),
          At("tm", end, Tx(2), "END after END"),
          At("tm", commit, Tx(3), "COMMIT without ENLIST"),
      }));
}

TEST(LogCheck, StreamsDisagree) {
  Log l;
  // The RM logs before the TM enlisted it.
  const log::Lsn early = l.Fs(Tx(1), Fs::kOp);
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kPrepared, 1);
  l.Fs(Tx(1), Fs::kCommitted);
  l.Fs(Tx(1), Fs::kApplied);
  const log::Lsn end1 = l.End(Tx(1));
  // Two-phase: an RM commits before the decision; the TM ends before the other RM is done.
  l.Enlist(Tx(2), kRootRm);
  l.Enlist(Tx(2), kDataRm);
  l.Fs(Tx(2), Fs::kPrepared, 0, kRoot);
  const log::Lsn prepared = l.Fs(Tx(2), Fs::kPrepared, 0, kData);
  const log::Lsn undecided = l.Fs(Tx(2), Fs::kCommitted, 0, kRoot);
  l.Commit(Tx(2), {kRootRm, kDataRm});
  l.Fs(Tx(2), Fs::kApplied, 0, kRoot);
  const log::Lsn end2 = l.End(Tx(2));
  // Work after the end; a rollback of a decided commit.
  const log::Lsn late = l.Fs(Tx(1), Fs::kOp);
  l.Enlist(Tx(3), kRootRm);
  l.Enlist(Tx(3), kDataRm);
  l.Fs(Tx(3), Fs::kPrepared, 0, kRoot);
  l.Fs(Tx(3), Fs::kPrepared, 0, kData);
  const log::Lsn decided = l.Commit(Tx(3), {kRootRm, kDataRm});
  const log::Lsn aborted = l.Fs(Tx(3), Fs::kAborted, 0, kRoot);
  CheckReport r = l.Check();
  EXPECT_EQ(
      Violations(r),
      (std::vector<std::string>{
          At("fs.root", early, Tx(1), "OP with no ENLIST of rm root in tm before it"),
          At("fs.root", undecided, Tx(2),
             "COMMITTED before the TM's COMMIT decision (two-phase: 2 rms enlisted)"),
          At("tm", end2, Tx(2),
             "END before rm data finished it (last in fs.data: PREPARED at LSN " +
                 log::LsnToString(prepared) + ")"),
          At("fs.root", late, Tx(1), "OP after APPLIED"),
          At("fs.root", late, Tx(1), "OP after the TM's END at LSN " + log::LsnToString(end1)),
          At("fs.root", aborted, Tx(3),
             "ABORTED though the TM decided COMMIT at LSN " + log::LsnToString(decided)),
      }));
}

TEST(LogCheck, HistoryBeforeTheBaseMayBeIncomplete) {
  Log l;
  // Tx 1's records before the fs stream's base are partly gone: what is left is not judged
  // for what it lacks.
  l.Fs(Tx(1), Fs::kApplied);
  const log::Lsn base = l.next();
  l.Enlist(Tx(2));
  l.Fs(Tx(2), Fs::kOp);
  const log::Lsn applied = l.Fs(Tx(2), Fs::kApplied);
  CheckReport r = l.Check(base);
  EXPECT_EQ(Violations(r),
            std::vector<std::string>{At("fs.root", applied, Tx(2), "APPLIED without COMMITTED")});
}

TEST(LogCheck, TruncatedAtTheNewestRecord) {
  Log l;
  // An fs RM's truncation spares only transactions with an OP: this one's COMMITTED is gone,
  // its APPLIED came at (and after) the new base, and its ENLIST is gone with the TM's base.
  const log::Lsn base = l.Fs(Tx(1), Fs::kApplied, 0, kRoot);
  l.Fs(Tx(2), Fs::kApplied, 0, kData);
  CheckReport r = l.Check(base);
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
  EXPECT_EQ(InFlight(r), std::vector<std::string>{});
}

TEST(LogCheck, RestartAreaCarriesLiveTransactions) {
  Log l;
  // The TM's restart area lists tx 1 committed: what follows needs no earlier records.
  tm::TxImage live{Tx(1), 1000, "", tm::Decision::kCommit, {}};
  live.enlistments = {{kRootRm, "root", {}}, {kDataRm, "data", {}}};
  l.TmRestart({live});
  l.Fs(Tx(1), Fs::kCommitted, 0, kRoot);
  l.Fs(Tx(1), Fs::kApplied, 0, kRoot);
  l.Fs(Tx(1), Fs::kCommitted, 0, kData);
  l.Fs(Tx(1), Fs::kApplied, 0, kData);
  l.End(Tx(1));
  CheckReport r = l.Check(/*fs_base=*/l.next());
  EXPECT_EQ(Violations(r), std::vector<std::string>{});
}

TEST(LogCheck, RestartAreaDisagreesWithRecords) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kPrepared);
  l.Fs(Tx(1), Fs::kCommitted);
  l.End(Tx(1));
  l.Enlist(Tx(2));
  // Lists the ended tx 1, leaves out the live tx 2.
  const log::Lsn restart = l.TmRestart({tm::TxImage{Tx(1), 1000, "", tm::Decision::kNone, {}}});
  CheckReport r = l.Check();
  EXPECT_EQ(Violations(r), (std::vector<std::string>{
                               At("tm", restart, Tx(1),
                                  "restart area lists the transaction, which ENDed at LSN " +
                                      log::LsnToString(restart - 2 * 0x40)),
                               At("tm", restart, Tx(2),
                                  "restart area leaves out the transaction, live since LSN " +
                                      log::LsnToString(restart - 0x40)),
                           }));
}

TEST(LogCheck, RestartLsnMustNameARestartArea) {
  Log l;
  const log::Lsn enlist = l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kAborted);
  l.End(Tx(1));
  l.TmRestart({});
  CheckReport r = l.Check(kStart, enlist);
  EXPECT_EQ(Violations(r),
            std::vector<std::string>{"stream tm LSN " + log::LsnToString(enlist) +
                                     ": the newest restart area is a record of type 0x7401, not a "
                                     "restart area"});
  r = l.Check(kStart, l.next() + 0x1000);
  ASSERT_EQ(r.violations.size(), 2u);
  EXPECT_EQ(r.violations[0].what, "the newest restart area is not in the stream (no record there)");
  EXPECT_EQ(r.violations[1].what.rfind("the newest restart area is past the stream's last", 0), 0u);
  r = l.Check(kStart, kStart - 0x40);
  ASSERT_FALSE(r.violations.empty());
  EXPECT_EQ(r.violations[0].what,
            "the newest restart area is before the log's start " + log::LsnToString(kStart));
}

TEST(LogCheck, DamageExcusesWhatItMayHaveHeld) {
  Log l;
  l.Enlist(Tx(1));
  l.Fs(Tx(1), Fs::kOp);
  l.DamageHere();  // tx 1's PREPARED and COMMITTED may have been in it
  l.Fs(Tx(1), Fs::kApplied);
  l.End(Tx(1));
  const log::Lsn op = l.Fs(Tx(1), Fs::kOp);
  CheckReport r = l.Check();
  // What follows in a transaction's own course is still checked.
  EXPECT_EQ(Violations(r), std::vector<std::string>{At("fs.root", op, Tx(1), "OP after APPLIED")});
}

TEST(LogCheck, UndecodableRecordsAreViolations) {
  Log l;
  const log::Lsn tm_bad = l.Add(kTm, uint16_t(TmRecordType::kEnd), {std::byte{9}});
  const log::Lsn fs_bad = l.Add(kRoot, fstx::kFsRecordType, {std::byte{2}});
  const log::Lsn foreign = l.Add(kRoot, 0x6601, {});
  CheckReport r = l.Check();
  ASSERT_EQ(r.violations.size(), 3u);
  EXPECT_EQ(r.violations[0].lsn, tm_bad);
  EXPECT_EQ(r.violations[1].lsn, fs_bad);
  EXPECT_EQ(r.violations[2].lsn, foreign);
  EXPECT_EQ(r.violations[2].what, "record type 0x6601 is not an fs RM record");
}

}  // namespace
}  // namespace ktmfs::logcheck

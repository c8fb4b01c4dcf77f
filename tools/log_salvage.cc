#include "tools/log_salvage.h"

#include <algorithm>
#include <set>
#include <utility>

#include "fs/tx/records.h"
#include "src/tm_records.h"

namespace ktmfs::salvage {

namespace {

namespace fstx = ktmfs::fstx;
namespace tm = ktmfs::tm;

// One transaction in one fs RM's stream.
struct FsTx {
  log::Lsn first = log::kInvalidLsn;
  uint64_t ops = 0;
  bool prepared = false;
  uint64_t op_count = 0;  // as PREPARED says
  log::Lsn prepared_lsn = log::kInvalidLsn;
  log::Lsn committed_lsn = log::kInvalidLsn;
  bool committed = false, applied = false, aborted = false;
};

}  // namespace

struct SalvagePlanner::Impl {
  std::map<log::StreamId, std::string> names;
  std::map<std::string, log::Lsn> base_of;  // by stream name
  std::string tm_stream;
  std::vector<std::pair<log::Lsn, log::Lsn>> damaged;
  // By fs stream, then transaction.
  std::map<std::string, std::map<Guid, FsTx>> fs;
  std::set<Guid> tm_committed;  // the TM's COMMIT decision was read
  // What the TM's stream shows of each transaction: its first record, END, the RMs enlisted.
  struct TmTx {
    log::Lsn first = log::kInvalidLsn, last = log::kInvalidLsn;
    bool ended = false;
    std::set<std::string> rms;
  };
  std::map<Guid, TmTx> tm;
  std::map<Guid, uint64_t> records_of;
  std::map<Guid, log::Lsn> first_of;
  uint64_t records = 0;

  bool DamageAfter(log::Lsn lsn) const {
    return std::any_of(damaged.begin(), damaged.end(),
                       [lsn](const auto& d) { return d.second > lsn; });
  }
  bool DamageBefore(log::Lsn lsn) const {
    return std::any_of(damaged.begin(), damaged.end(),
                       [lsn](const auto& d) { return d.first < lsn; });
  }
};

SalvagePlanner::SalvagePlanner(std::vector<log::StreamInfo> streams, std::string tm_stream)
    : impl_(std::make_unique<Impl>()) {
  for (const auto& s : streams) {
    impl_->names[s.id] = s.name;
    impl_->base_of[s.name] = s.base_lsn;
  }
  impl_->tm_stream = std::move(tm_stream);
}

SalvagePlanner::~SalvagePlanner() = default;

Guid TransactionOf(const log::Record& r, const std::string& stream, const std::string& tm_stream) {
  if (r.type == log::kRestartAreaRecordType) return {};
  if (stream == tm_stream) {
    if (!tm::IsTmRecordType(r.type)) return {};
    auto rec = tm::DecodeTmRecord(r, stream);
    return rec.ok() ? rec->tx.id : Guid{};
  }
  if (stream.rfind("fs.", 0) == 0 && r.type == fstx::kFsRecordType) {
    auto rec = fstx::DecodeRecord(r.payload, r.lsn);
    return rec.ok() ? rec->tx : Guid{};
  }
  return {};
}

void SalvagePlanner::Add(const log::Record& r) {
  Impl& m = *impl_;
  m.records++;
  auto name = m.names.find(r.stream);
  if (name == m.names.end() || r.type == log::kRestartAreaRecordType) return;
  const std::string& stream = name->second;
  if (stream == m.tm_stream) {
    if (!tm::IsTmRecordType(r.type)) return;
    auto rec = tm::DecodeTmRecord(r, stream);
    if (!rec.ok()) return;
    m.records_of[rec->tx.id]++;
    m.first_of.try_emplace(rec->tx.id, r.lsn);
    if (rec->type == tm::TmRecordType::kCommit) m.tm_committed.insert(rec->tx.id);
    auto& t = m.tm[rec->tx.id];
    if (t.first == log::kInvalidLsn) t.first = r.lsn;
    t.last = r.lsn;
    if (rec->type == tm::TmRecordType::kEnlist) t.rms.insert(rec->enlistment.rm_name);
    if (rec->type == tm::TmRecordType::kEnd) t.ended = true;
    return;
  }
  if (stream.rfind("fs.", 0) != 0 || r.type != fstx::kFsRecordType) return;
  auto rec = fstx::DecodeRecord(r.payload, r.lsn);
  if (!rec.ok()) return;
  m.records_of[rec->tx]++;
  m.first_of.try_emplace(rec->tx, r.lsn);
  FsTx& t = m.fs[stream][rec->tx];
  if (t.first == log::kInvalidLsn) t.first = r.lsn;
  switch (rec->type) {
    case fstx::RecordType::kOp:
      t.ops++;
      break;
    case fstx::RecordType::kPrepared:
      t.prepared = true;
      t.op_count = rec->op_count;
      t.prepared_lsn = r.lsn;
      break;
    case fstx::RecordType::kCommitted:
      t.committed = true;
      t.committed_lsn = r.lsn;
      break;
    case fstx::RecordType::kApplied:
      t.applied = true;
      break;
    case fstx::RecordType::kAborted:
      t.aborted = true;
      break;
    case fstx::RecordType::kRelogged:
      t.ops = rec->ops.size();  // they replace every op before
      break;
  }
}

void SalvagePlanner::Damaged(log::Lsn begin, log::Lsn end) {
  impl_->damaged.emplace_back(begin, end);
}

SalvagePlan SalvagePlanner::Finish() {
  Impl& m = *impl_;
  SalvagePlan plan;
  std::map<Guid, Lost> lost;
  for (const auto& [stream, txs] : m.fs) {
    for (const auto& [tx, t] : txs) {
      if (t.applied || t.aborted) continue;
      const bool committed = t.committed || m.tm_committed.count(tx) != 0;
      const bool whole = t.prepared && t.ops == t.op_count;
      std::string why;
      if (committed && !t.prepared && t.ops == 0 && !m.DamageBefore(t.committed_lsn)) {
        continue;  // it changed nothing (it only locked): nothing to redo
      } else if (committed && !t.prepared) {
        why = "its commit was read but not its PREPARED: its changes cannot be counted";
      } else if (t.prepared && !whole) {
        why = "PREPARED counts " + std::to_string(t.op_count) + " change(s), " +
              std::to_string(t.ops) + " could be read";
      } else if (committed &&
                 m.DamageAfter(t.committed_lsn == log::kInvalidLsn ? t.prepared_lsn
                                                                   : t.committed_lsn)) {
        // Redone blindly, it could overwrite what later commits wrote over it once applied.
        why =
            "committed, and its APPLIED may be in the damage after it: redoing it could undo "
            "later commits";
      } else if (committed) {
        continue;  // whole and decided, and not applied: the next mount redoes it
      } else if (t.prepared && m.DamageAfter(t.prepared_lsn)) {
        why = "prepared at LSN " + log::LsnToString(t.prepared_lsn) +
              ", and its decision may be in the damage after it";
      } else if (!t.prepared && m.DamageAfter(t.first)) {
        why =
            "unfinished, and its PREPARED and decision may be in the damage after its first "
            "record at LSN " +
            log::LsnToString(t.first);
      } else {
        continue;  // in doubt (the TM decides) or unfinished (rolled back): whole as it is
      }
      lost.try_emplace(tx, Lost{tx, stream, committed, why});
    }
  }
  // A transaction the TM enlisted with an fs RM whose stream shows none of its records, though
  // they are not before its base, with damage after its enlistment: all of them may be in the
  // damage. Unfinished, its decision may be too; ended, the RM's outcome may be COMMITTED with
  // its apply still pending (the TM ends a transaction once its RMs have decided).
  for (const auto& [tx, t] : m.tm) {
    if (lost.count(tx)) continue;
    for (const std::string& rm : t.rms) {
      const std::string name = "fs." + rm;
      // With dedicated logs (-o log=dedicated) the RM's stream is in another log, salvaged on
      // its own; but a decision the TM's damage may have held is reported here.
      if (m.base_of.count(name) == 0) {
        if (t.ended || !m.DamageAfter(t.first)) continue;
        lost.try_emplace(tx, Lost{tx, name, m.tm_committed.count(tx) != 0,
                                  "its commit decision may be in the damage of the TM's log, and "
                                  "rm " +
                                      rm +
                                      "'s log (another log) would presume an abort: "
                                      "check that log's transaction by hand"});
        break;
      }
      auto stream = m.fs.find(name);
      const bool seen = stream != m.fs.end() && stream->second.count(tx) != 0;
      auto base = m.base_of.find(name);
      // Its records were truncated away only if the base is past everything the TM logged of it
      // (an RM may truncate past a transaction that has not logged in its stream yet).
      const bool truncated = base != m.base_of.end() && base->second > t.last;
      if (seen || truncated || !m.DamageAfter(t.first)) continue;
      lost.try_emplace(
          tx, Lost{tx, name, t.ended || m.tm_committed.count(tx) != 0,
                   t.ended ? "its records in " + name +
                                 " are in the damage: it ended, and if its apply was still "
                                 "pending, part of it was never applied"
                           : "enlisted with rm " + rm +
                                 ", whose stream shows none of its records: they, and its "
                                 "decision, may be in the damage"});
      break;
    }
  }
  uint64_t lost_records = 0;
  for (auto& [tx, l] : lost) {
    lost_records += m.records_of[tx];
    plan.lost.push_back(std::move(l));
  }
  std::sort(plan.lost.begin(), plan.lost.end(),
            [&](const Lost& a, const Lost& b) { return m.first_of[a.tx] < m.first_of[b.tx]; });
  plan.records_read = m.records;
  plan.records_kept = m.records - lost_records;
  plan.transactions_kept = m.records_of.size() - lost.size();
  return plan;
}

bool SalvagePlan::Keeps(const Guid& tx) const {
  return tx.IsNil() ||
         std::none_of(lost.begin(), lost.end(), [&](const Lost& l) { return l.tx == tx; });
}

}  // namespace ktmfs::salvage

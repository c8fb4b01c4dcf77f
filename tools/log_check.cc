#include "tools/log_check.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "fs/tx/records.h"
#include "src/tm_records.h"

namespace ktmfs::logcheck {

namespace {

namespace fstx = ktmfs::fstx;
namespace tm = ktmfs::tm;

std::string At(log::Lsn lsn) {
  return log::LsnToString(lsn);
}

std::string TypeText(uint16_t type) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", type);
  return buf;
}

// One transaction in the TM's stream. An LSN of kInvalidLsn means "not logged (yet)".
struct TmTx {
  log::Lsn first = log::kInvalidLsn, last = log::kInvalidLsn;
  // Its start is not in what the log holds (before its stream's base, or across damage), or
  // a restart area brought it in: records that must come before may be missing.
  bool partial = false;
  // Left out of a restart area while live: the TM no longer knows it (reported once).
  bool forgotten = false;
  struct Rm {
    std::string name;
    log::Lsn enlisted = log::kInvalidLsn;  // kInvalidLsn when a restart area listed it
  };
  std::map<Guid, Rm> rms;
  log::Lsn commit = log::kInvalidLsn, abort = log::kInvalidLsn, end = log::kInvalidLsn;
  // Who began it, from an ENLIST, a COMMIT or a restart area, for the recovery plan.
  bool owner_known = false;
  uint32_t owner = 0;
  std::string description;
  void Learn(const tm::TxImage& img) {
    owner_known = true;
    owner = img.owner;
    description = img.description;
  }

  // The furthest step taken, for "X after Y".
  const char* Latest() const {
    if (end != log::kInvalidLsn) return "END";
    if (abort != log::kInvalidLsn) return "ABORT";
    if (commit != log::kInvalidLsn) return "COMMIT";
    return nullptr;
  }
};

// One transaction in an fs RM's stream.
struct FsTx {
  log::Lsn first = log::kInvalidLsn, last = log::kInvalidLsn;
  bool partial = false;
  uint64_t ops = 0;
  log::Lsn prepared = log::kInvalidLsn, committed = log::kInvalidLsn, applied = log::kInvalidLsn,
           aborted = log::kInvalidLsn;

  const char* Latest() const {
    if (aborted != log::kInvalidLsn) return "ABORTED";
    if (applied != log::kInvalidLsn) return "APPLIED";
    if (committed != log::kInvalidLsn) return "COMMITTED";
    if (prepared != log::kInvalidLsn) return "PREPARED";
    return nullptr;
  }
  bool Finished() const {
    return committed != log::kInvalidLsn || applied != log::kInvalidLsn ||
           aborted != log::kInvalidLsn;
  }
  log::Lsn LatestLsn() const { return std::max({prepared, committed, applied, aborted, last}); }
};

const char* FsName(fstx::RecordType t) {
  switch (t) {
    case fstx::RecordType::kOp:
      return "OP";
    case fstx::RecordType::kPrepared:
      return "PREPARED";
    case fstx::RecordType::kCommitted:
      return "COMMITTED";
    case fstx::RecordType::kApplied:
      return "APPLIED";
    case fstx::RecordType::kAborted:
      return "ABORTED";
    case fstx::RecordType::kRelogged:
      return "RELOGGED";
  }
  return "?";
}

enum class Kind { kTm, kFs, kOther };

struct StreamState {
  log::StreamInfo info;
  Kind kind = Kind::kOther;
  std::string rm;  // kFs: the RM's name
  log::Lsn last_read = log::kInvalidLsn;
  bool restart_read = false;  // a record was read at info.restart_lsn
  uint16_t restart_type = 0;  // and its type
  std::map<Guid, TmTx> tm;
  std::map<Guid, FsTx> fs;
};

}  // namespace

struct ProtocolChecker::Impl {
  std::map<log::StreamId, StreamState> streams;
  StreamState* tm = nullptr;
  std::map<std::string, StreamState*> fs_by_rm;
  log::Lsn start = log::kInvalidLsn;
  std::vector<std::pair<log::Lsn, log::Lsn>> damaged;
  CheckReport report;
  std::set<Guid> txs;

  void Violate(const StreamState& s, log::Lsn lsn, const Guid& tx, std::string what) {
    report.violations.push_back({s.info.name, lsn, tx, std::move(what)});
  }
  // Anything may be missing before a record at `lsn` of a transaction first seen there.
  bool MayMissStart(const StreamState& s, log::Lsn lsn) const {
    return lsn < s.info.base_lsn || !damaged.empty();
  }
  // An fs RM truncates its stream at its newest record, sparing only the transactions live
  // in its own view, which misses those that logged no OP: a finished transaction's COMMITTED
  // may lie before the base and its APPLIED after it. The TM's ENLIST, when read, proves that
  // the log holds everything after it; otherwise only a record that can begin a transaction
  // does, from the base on.
  bool FsMayMissStart(const StreamState& s, log::Lsn lsn, const Guid& tx,
                      fstx::RecordType type) const {
    if (!damaged.empty()) return true;
    if (tm != nullptr) {
      auto it = tm->tm.find(tx);
      if (it != tm->tm.end()) {
        for (const auto& [rm, e] : it->second.rms)
          if (e.name == s.rm && e.enlisted != log::kInvalidLsn) return false;
      }
    }
    return lsn < s.info.base_lsn || type == fstx::RecordType::kCommitted ||
           type == fstx::RecordType::kApplied;
  }
  bool InDamage(log::Lsn lsn) const {
    for (const auto& [b, e] : damaged)
      if (lsn >= b && lsn < e) return true;
    return false;
  }
  // The TM's view of `tx` when it saw the transaction from its start, for checks across
  // streams; only valid when the TM's stream shares this log (LSN order is append order).
  const TmTx* TmView(const Guid& tx) const {
    if (tm == nullptr) return nullptr;
    auto it = tm->tm.find(tx);
    if (it == tm->tm.end() || it->second.partial) return nullptr;
    return &it->second;
  }

  // A single-phase commit's decision is its RM's COMMITTED: the TM logs none.
  bool CommittedByItsRm(const Guid& id, const TmTx& t) const {
    if (t.rms.size() != 1) return false;
    auto sit = fs_by_rm.find(t.rms.begin()->second.name);
    if (sit == fs_by_rm.end()) return false;
    auto fit = sit->second->fs.find(id);
    return fit != sit->second->fs.end() &&
           (fit->second.committed != log::kInvalidLsn || fit->second.applied != log::kInvalidLsn);
  }

  // Fills report.plan from what is left open, once every record is in.
  void Plan();
  void AddTm(StreamState& s, const log::Record& r);
  void TmRestartArea(StreamState& s, const log::Record& r);
  void TmEnd(StreamState& s, log::Lsn lsn, const Guid& id, const TmTx& t);
  void AddFs(StreamState& s, const log::Record& r);
};

void ProtocolChecker::Impl::AddTm(StreamState& s, const log::Record& r) {
  if (r.type == log::kRestartAreaRecordType) return TmRestartArea(s, r);
  if (!tm::IsTmRecordType(r.type))
    return Violate(s, r.lsn, {}, "record type " + TypeText(r.type) + " is not a TM record");
  auto rec = tm::DecodeTmRecord(r, s.info.name);
  if (!rec.ok()) return Violate(s, r.lsn, {}, rec.status().message());
  const Guid id = rec->tx.id;
  auto [it, fresh] = s.tm.try_emplace(id);
  TmTx& t = it->second;
  if (fresh) {
    t.first = r.lsn;
    t.partial = MayMissStart(s, r.lsn);
    txs.insert(id);
  }
  t.last = r.lsn;
  auto v = [&](std::string what) { Violate(s, r.lsn, id, std::move(what)); };
  const char* latest = t.Latest();
  if (rec->type == tm::TmRecordType::kEnlist || rec->type == tm::TmRecordType::kCommit)
    t.Learn(rec->tx);
  switch (rec->type) {
    case tm::TmRecordType::kEnlist: {
      // Enlist needs an active transaction: nothing decided, nothing ended.
      if (latest) v(std::string("ENLIST after ") + latest);
      const Guid& rm = rec->enlistment.rm;
      if (t.rms.count(rm))
        v("second ENLIST of rm " + rec->enlistment.rm_name);
      else
        t.rms[rm] = {rec->enlistment.rm_name, r.lsn};
      break;
    }
    case tm::TmRecordType::kEnlistInfo:
      if (latest) v(std::string("ENLIST_INFO after ") + latest);
      if (!t.rms.count(rec->enlistment.rm) && !t.partial)
        v("ENLIST_INFO for rm " + rec->enlistment.rm.ToString() + ", which it never enlisted");
      break;
    case tm::TmRecordType::kCommit: {
      if (latest) v(std::string("COMMIT after ") + latest);
      const auto& named = rec->tx.enlistments;
      if (!t.partial) {
        if (t.rms.empty()) {
          v("COMMIT without ENLIST");
        } else {
          for (const auto& e : named)
            if (!t.rms.count(e.rm)) v("COMMIT names rm " + e.rm_name + ", which it never enlisted");
          for (const auto& [rm, e] : t.rms) {
            bool listed = std::any_of(named.begin(), named.end(),
                                      [&](const tm::EnlistmentImage& n) { return n.rm == rm; });
            if (!listed) v("COMMIT leaves out enlisted rm " + e.name);
          }
        }
      }
      // One RM commits in a single phase: its own COMMITTED is the decision.
      if (named.size() == 1)
        v("COMMIT of a single rm (" + named[0].rm_name + "): a single-phase commit logs none");
      for (const auto& e : named)
        t.rms.try_emplace(e.rm, TmTx::Rm{e.rm_name, log::kInvalidLsn});
      if (t.commit == log::kInvalidLsn) t.commit = r.lsn;
      break;
    }
    case tm::TmRecordType::kAbort:
      // Abort only overrides a decision whose flush failed.
      if (t.end != log::kInvalidLsn || t.abort != log::kInvalidLsn)
        v(std::string("ABORT after ") + latest);
      else if (t.commit == log::kInvalidLsn && !t.partial)
        v("ABORT without COMMIT");
      if (t.abort == log::kInvalidLsn) t.abort = r.lsn;
      break;
    case tm::TmRecordType::kEnd:
      if (t.end != log::kInvalidLsn) {
        v("END after END");
        break;
      }
      if (t.rms.empty() && !t.partial) v("END without ENLIST");
      t.end = r.lsn;
      TmEnd(s, r.lsn, id, t);
      break;
  }
}

// END comes once every RM has replied, and each RM logs its outcome before it replies.
void ProtocolChecker::Impl::TmEnd(StreamState& s, log::Lsn lsn, const Guid& id, const TmTx& t) {
  for (const auto& [rm, e] : t.rms) {
    auto sit = fs_by_rm.find(e.name);
    if (sit == fs_by_rm.end()) continue;  // in another log, or not an fs RM
    const StreamState& fs = *sit->second;
    auto fit = fs.fs.find(id);
    if (fit == fs.fs.end()) {
      // Even an RM that only locked logs PREPARED or ABORTED; unless its records may be gone.
      if (e.enlisted != log::kInvalidLsn && e.enlisted >= fs.info.base_lsn && damaged.empty())
        Violate(s, lsn, id, "END, yet rm " + e.name + " logged nothing of it in " + fs.info.name);
      continue;
    }
    const FsTx& f = fit->second;
    if (!f.Finished()) {
      const char* latest = f.Latest();
      Violate(s, lsn, id,
              "END before rm " + e.name + " finished it (last in " + fs.info.name + ": " +
                  (latest ? latest : "OP") + " at LSN " + At(f.LatestLsn()) + ")");
    }
  }
}

void ProtocolChecker::Impl::TmRestartArea(StreamState& s, const log::Record& r) {
  auto live = tm::DecodeRestartArea(r, s.info.name);
  if (!live.ok()) return Violate(s, r.lsn, {}, live.status().message());
  std::set<Guid> listed;
  for (const tm::TxImage& img : *live) {
    listed.insert(img.id);
    auto v = [&](std::string what) { Violate(s, r.lsn, img.id, std::move(what)); };
    auto [it, fresh] = s.tm.try_emplace(img.id);
    TmTx& t = it->second;
    t.Learn(img);
    if (fresh) {
      // Its earlier records may be gone: the restart area stands for them.
      t.first = t.last = r.lsn;
      t.partial = true;
      txs.insert(img.id);
      for (const auto& e : img.enlistments)
        t.rms[e.rm] = {e.rm_name, log::kInvalidLsn};
      if (img.decision == tm::Decision::kCommit) t.commit = r.lsn;
      if (img.decision == tm::Decision::kAbort) t.commit = t.abort = r.lsn;
      continue;
    }
    if (t.end != log::kInvalidLsn) {
      v("restart area lists the transaction, which ENDed at LSN " + At(t.end));
      continue;
    }
    const bool committed = t.commit != log::kInvalidLsn, aborted = t.abort != log::kInvalidLsn;
    if (img.decision == tm::Decision::kNone && committed)
      v("restart area lists the transaction undecided, after its COMMIT at LSN " + At(t.commit));
    if (img.decision == tm::Decision::kCommit && aborted)
      v("restart area lists the transaction committed, after its ABORT at LSN " + At(t.abort));
    if (img.decision == tm::Decision::kCommit && !committed && !t.partial)
      v("restart area lists the transaction committed, without a COMMIT record");
    if (img.decision == tm::Decision::kAbort && !aborted && !t.partial)
      v("restart area lists the transaction aborted, without an ABORT record");
  }
  // The TM writes a restart area holding its lock, so every live transaction is in it; unless
  // damage hid the END of one.
  if (!damaged.empty()) return;
  for (auto& [id, t] : s.tm) {
    if (t.end != log::kInvalidLsn || t.forgotten || listed.count(id) || t.first >= r.lsn) continue;
    Violate(s, r.lsn, id, "restart area leaves out the transaction, live since LSN " + At(t.first));
    t.forgotten = true;
  }
}

void ProtocolChecker::Impl::AddFs(StreamState& s, const log::Record& r) {
  if (r.type == log::kRestartAreaRecordType) return;  // fs RMs keep nothing in theirs
  if (r.type != fstx::kFsRecordType)
    return Violate(s, r.lsn, {}, "record type " + TypeText(r.type) + " is not an fs RM record");
  auto rec = fstx::DecodeRecord(r.payload, r.lsn);
  if (!rec.ok()) return Violate(s, r.lsn, {}, rec.status().message());
  const Guid id = rec->tx;
  auto [it, fresh] = s.fs.try_emplace(id);
  FsTx& t = it->second;
  if (fresh) {
    t.first = r.lsn;
    t.partial = FsMayMissStart(s, r.lsn, id, rec->type);
    txs.insert(id);
  }
  t.last = r.lsn;
  auto v = [&](std::string what) { Violate(s, r.lsn, id, std::move(what)); };
  const char* latest = t.Latest();
  const std::string name = FsName(rec->type);
  switch (rec->type) {
    case fstx::RecordType::kOp:
      if (latest) v("OP after " + std::string(latest));
      ++t.ops;
      break;
    case fstx::RecordType::kPrepared:
      if (latest) {
        v("PREPARED after " + std::string(latest));
      } else if (!t.partial && rec->op_count != t.ops) {
        v("PREPARED counts " + std::to_string(rec->op_count) + " OP record(s), the stream holds " +
          std::to_string(t.ops));
      }
      t.prepared = r.lsn;
      break;
    case fstx::RecordType::kCommitted:
      if (t.committed != log::kInvalidLsn || t.applied != log::kInvalidLsn ||
          t.aborted != log::kInvalidLsn)
        v("COMMITTED after " + std::string(latest));
      else if (t.prepared == log::kInvalidLsn && !t.partial)
        v("COMMITTED without PREPARED");
      t.committed = r.lsn;
      break;
    case fstx::RecordType::kApplied:
      if (t.applied != log::kInvalidLsn || t.aborted != log::kInvalidLsn)
        v("APPLIED after " + std::string(latest));
      else if (t.committed == log::kInvalidLsn && !t.partial)
        v("APPLIED without COMMITTED");
      t.applied = r.lsn;
      break;
    case fstx::RecordType::kAborted:
      // A second ABORTED is recovery rolling back again what the TM still held in doubt.
      if (t.committed != log::kInvalidLsn || t.applied != log::kInvalidLsn)
        v("ABORTED after " + std::string(latest));
      if (t.aborted == log::kInvalidLsn) t.aborted = r.lsn;
      break;
    case fstx::RecordType::kRelogged:
      // A live transaction's ops carried forward: all of them, whatever came before.
      if (latest) v("RELOGGED after " + std::string(latest));
      t.ops = rec->ops.size();
      t.partial = false;
      break;
  }

  if (tm != nullptr && !tm->tm.count(id) && rec->type != fstx::RecordType::kApplied &&
      r.lsn >= tm->info.base_lsn && damaged.empty()) {
    // From its base on the TM's stream holds every transaction not yet ended (its restart
    // area carries the older ones), and only APPLIED follows an END.
    return v(name + " with no ENLIST of rm " + s.rm + " in " + tm->info.name + " before it");
  }
  const TmTx* view = TmView(id);
  if (view == nullptr) return;
  bool enlisted = std::any_of(view->rms.begin(), view->rms.end(),
                              [&](const auto& e) { return e.second.name == s.rm; });
  if (!enlisted) v(name + " with no ENLIST of rm " + s.rm + " in " + tm->info.name + " before it");
  // APPLIED may follow END: a single-phase commit is acknowledged before its apply is synced.
  if (view->end != log::kInvalidLsn && rec->type != fstx::RecordType::kApplied)
    v(name + " after the TM's END at LSN " + At(view->end));
  if (rec->type == fstx::RecordType::kCommitted) {
    if (view->abort != log::kInvalidLsn)
      v("COMMITTED though the TM logged ABORT at LSN " + At(view->abort));
    else if (view->rms.size() >= 2 && view->commit == log::kInvalidLsn)
      v("COMMITTED before the TM's COMMIT decision (two-phase: " +
        std::to_string(view->rms.size()) + " rms enlisted)");
  }
  if (rec->type == fstx::RecordType::kAborted && view->commit != log::kInvalidLsn &&
      view->abort == log::kInvalidLsn)
    v("ABORTED though the TM decided COMMIT at LSN " + At(view->commit));
}

ProtocolChecker::ProtocolChecker(std::vector<log::StreamInfo> streams, log::Lsn start_lsn,
                                 std::string tm_stream)
    : impl_(std::make_unique<Impl>()) {
  impl_->start = start_lsn;
  for (log::StreamInfo& info : streams) {
    StreamState& s = impl_->streams[info.id];
    s.info = std::move(info);
    if (s.info.name == tm_stream) {
      s.kind = Kind::kTm;
      impl_->tm = &s;
    } else if (s.info.name.size() > 3 && s.info.name.compare(0, 3, "fs.") == 0) {
      s.kind = Kind::kFs;
      s.rm = s.info.name.substr(3);
      impl_->fs_by_rm[s.rm] = &s;
    }
  }
}

ProtocolChecker::~ProtocolChecker() = default;

void ProtocolChecker::Add(const log::Record& r) {
  Impl& m = *impl_;
  ++m.report.records;
  auto it = m.streams.find(r.stream);
  if (it == m.streams.end()) {
    // The base file does not list it: say so once, then count it as a stream of unknown use.
    StreamState& s = m.streams[r.stream];
    s.info = {r.stream, "#" + std::to_string(r.stream), log::kInvalidLsn, log::kInvalidLsn,
              log::kInvalidLsn};
    m.Violate(s, r.lsn, {}, "record of a stream the log does not list");
    it = m.streams.find(r.stream);
  }
  StreamState& s = it->second;
  s.last_read = r.lsn;
  if (r.lsn == s.info.restart_lsn) {
    s.restart_read = true;
    s.restart_type = r.type;
  }
  switch (s.kind) {
    case Kind::kTm:
      return m.AddTm(s, r);
    case Kind::kFs:
      return m.AddFs(s, r);
    case Kind::kOther:
      return;
  }
}

void ProtocolChecker::Damaged(log::Lsn begin, log::Lsn end) {
  impl_->damaged.emplace_back(begin, end);
  // Records of transactions already seen may be in the range: check them from here as if
  // their start were gone.
  for (auto& [id, s] : impl_->streams) {
    for (auto& [tx, t] : s.tm)
      t.partial = true;
    for (auto& [tx, t] : s.fs)
      t.partial = true;
  }
}

CheckReport ProtocolChecker::Finish() {
  Impl& m = *impl_;
  for (auto& [id, s] : m.streams) {
    auto v = [&](log::Lsn lsn, std::string what) { m.Violate(s, lsn, {}, std::move(what)); };
    const log::StreamInfo& info = s.info;
    if (s.kind == Kind::kOther) {
      if (info.base_lsn != log::kInvalidLsn || s.last_read != log::kInvalidLsn)
        m.report.unchecked.push_back(info.name);
    }
    // The restart area the base file names is where recovery starts: it must be there.
    if (info.restart_lsn != log::kInvalidLsn) {
      if (info.restart_lsn < m.start) {
        v(info.restart_lsn, "the newest restart area is before the log's start " + At(m.start));
      } else if (!s.restart_read && !m.InDamage(info.restart_lsn)) {
        v(info.restart_lsn, "the newest restart area is not in the stream (no record there)");
      } else if (s.restart_read && s.restart_type != log::kRestartAreaRecordType) {
        v(info.restart_lsn, "the newest restart area is a record of type " +
                                TypeText(s.restart_type) + ", not a restart area");
      }
      if (info.base_lsn != log::kInvalidLsn && info.base_lsn > info.restart_lsn)
        v(info.base_lsn, "base LSN is past the newest restart area at " + At(info.restart_lsn));
      if (info.last_lsn != log::kInvalidLsn && info.restart_lsn > info.last_lsn)
        v(info.restart_lsn,
          "the newest restart area is past the stream's last record at " + At(info.last_lsn));
    }
    if (info.base_lsn != log::kInvalidLsn && info.base_lsn < m.start)
      v(info.base_lsn, "base LSN is before the log's start " + At(m.start) +
                           ": records the stream needs are gone");
    if (m.damaged.empty() && info.last_lsn != log::kInvalidLsn && s.last_read != info.last_lsn)
      v(info.last_lsn,
        "the log names this as the stream's last record, the last read is at " + At(s.last_read));

    for (const auto& [tx, t] : s.tm) {
      if (t.end != log::kInvalidLsn || t.forgotten) continue;
      std::string state = t.abort != log::kInvalidLsn    ? "aborted, end pending"
                          : t.commit != log::kInvalidLsn ? "committed, end pending"
                          : m.CommittedByItsRm(tx, t)
                              ? "committed by its rm (single phase), end pending"
                              : "unfinished";
      m.report.in_flight.push_back({info.name, tx, t.first, t.last, state});
    }
    for (const auto& [tx, t] : s.fs) {
      if (t.applied != log::kInvalidLsn || t.aborted != log::kInvalidLsn) continue;
      std::string state = t.committed != log::kInvalidLsn  ? "committed, apply pending"
                          : t.prepared != log::kInvalidLsn ? "prepared, unfinished"
                                                           : "unfinished";
      m.report.in_flight.push_back({info.name, tx, t.first, t.last, state});
    }
  }
  std::stable_sort(m.report.in_flight.begin(), m.report.in_flight.end(),
                   [](const InFlight& a, const InFlight& b) {
                     return std::tie(a.stream, a.first) < std::tie(b.stream, b.first);
                   });
  m.Plan();
  m.report.transactions = m.txs.size();
  return m.report;
}

void ProtocolChecker::Impl::Plan() {
  using Action = PlannedStep::Action;
  auto step = [&](const Guid& tx, const std::string& stream, Action action, std::string why) {
    PlannedStep p;
    p.tx = tx;
    p.stream = stream;
    p.action = action;
    p.why = std::move(why);
    if (tm != nullptr) {
      auto it = tm->tm.find(tx);
      if (it != tm->tm.end() && it->second.owner_known) {
        p.owner_known = true;
        p.owner = it->second.owner;
        p.description = it->second.description;
      }
    }
    report.plan.push_back(std::move(p));
  };
  std::set<Guid> settled_by_rm;
  for (const auto& [id, s] : streams) {
    if (s.kind != Kind::kFs) continue;
    for (const auto& [tx, t] : s.fs) {
      if (t.applied != log::kInvalidLsn || t.aborted != log::kInvalidLsn) continue;
      settled_by_rm.insert(tx);
      if (t.committed != log::kInvalidLsn) {
        step(tx, s.info.name, Action::kApply,
             "its COMMITTED record is at LSN " + At(t.committed) + ", its APPLIED is not logged");
        continue;
      }
      const TmTx* d = nullptr;
      if (tm != nullptr) {
        auto it = tm->tm.find(tx);
        if (it != tm->tm.end()) d = &it->second;
      }
      if (d != nullptr && d->commit != log::kInvalidLsn && d->abort == log::kInvalidLsn) {
        step(tx, s.info.name, Action::kApply,
             "the transaction manager's COMMIT decision is at LSN " + At(d->commit));
      } else if (t.prepared != log::kInvalidLsn) {
        step(tx, s.info.name, Action::kRollBack,
             "prepared at LSN " + At(t.prepared) + ", but no commit decision was logged");
      } else {
        step(tx, s.info.name, Action::kRollBack,
             "unfinished: " + std::to_string(t.ops) + " change(s) logged, no decision");
      }
    }
  }
  if (tm == nullptr) return;
  for (const auto& [tx, t] : tm->tm) {
    if (t.end != log::kInvalidLsn || t.forgotten || settled_by_rm.count(tx)) continue;
    if (t.abort != log::kInvalidLsn) {
      step(tx, tm->info.name, Action::kFinish,
           "aborted at LSN " + At(t.abort) + ", END not logged");
    } else if (t.commit != log::kInvalidLsn || CommittedByItsRm(tx, t)) {
      step(tx, tm->info.name, Action::kFinish, "committed and applied, END not logged");
    } else {
      step(tx, tm->info.name, Action::kRollBack, "unfinished, with no resource manager's records");
    }
  }
}

const char* ActionName(PlannedStep::Action a) {
  switch (a) {
    case PlannedStep::Action::kApply:
      return "apply";
    case PlannedStep::Action::kRollBack:
      return "roll back";
    case PlannedStep::Action::kFinish:
      return "finish";
  }
  return "?";
}

std::string ToString(const Violation& v) {
  std::string text = "stream " + v.stream;
  if (v.lsn != log::kInvalidLsn) text += " LSN " + At(v.lsn);
  if (!v.tx.IsNil()) text += " tx " + v.tx.ToString();
  return text + ": " + v.what;
}

std::string ToString(const InFlight& f) {
  return "stream " + f.stream + " tx " + f.tx.ToString() + ": " + f.state;
}

}  // namespace ktmfs::logcheck

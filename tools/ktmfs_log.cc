// ktmfs-log: offline inspection of a ktmfs log (dump, verify, stat, check). See ktmfs-log(8).
//
// The log is opened read-only (LogOptions::read_only): inspecting a log, even a damaged one,
// never changes a byte of it, so it is safe on the log of a crashed mount before recovery. A
// log a running daemon holds is read too, with a warning: it may change while it is read.
#include <getopt.h>
#include <pwd.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fs/mount/daemon_log.h"
#include "fs/mount/state_lock.h"
#include "fs/tx/records.h"
#include "ktmfs_config.h"
#include "log/base_file.h"
#include "log/log.h"
#include "src/tm_records.h"
#include "tools/log_check.h"
#include "tools/log_read.h"
#include "tools/salvage_command.h"

namespace {

using ktmfs::Result;
using ktmfs::Status;
namespace klog = ktmfs::log;
namespace logcheck = ktmfs::logcheck;
using json = nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitDamaged = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCannotOpen = 3;

void Usage(FILE* out) {
  std::fprintf(
      out,
      "Usage: ktmfs-log [-s STREAM] [-x] [-j] dump|verify|stat|check DIR\n"
      "       ktmfs-log [-j] recover --dry-run DIR\n"
      "       ktmfs-log [-j] [-n] salvage DIR\n"
      "Inspect the ktmfs log in DIR, a state directory (the log is in DIR/log) or a log\n"
      "directory itself, without changing it.\n"
      "\n"
      "  dump     print every record in LSN order, decoded where its type is known\n"
      "  verify   read every record of every stream; report damage with stream and LSN\n"
      "  stat     geometry, streams, LSN ranges, record counts and restart areas\n"
      "  check    verify, then decode every record and check each transaction's course\n"
      "           through the streams (enlisted, prepared, decided, applied, ended) and each\n"
      "           stream's restart area; list the transactions left in flight\n"
      "\n"
      "  -s, --stream=NAME   dump only this stream\n"
      "  -x, --hex           dump: also print each payload in hexadecimal\n"
      "  -j, --json          print JSON instead of text\n"
      "  -n, --dry-run       recover, salvage: only say what would be done (recovery\n"
      "                      itself runs at mount, so recover is always a dry run)\n"
      "      --help          show this help and exit\n"
      "      --version       show the version and exit\n"
      "\n"
      "Exit status: 0 the log is sound (a torn tail cut at the last valid record\n"
      "counts as sound; transactions in flight are not errors), 1 damage was found\n"
      "(check, recover: or the protocol was violated; salvage: it could not finish), 2 usage\n"
      "error, 3 the log cannot be opened (salvage: or a daemon uses it).\n");
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

std::string Lsn(klog::Lsn lsn) {
  return lsn == klog::kInvalidLsn ? "-" : klog::LsnToString(lsn);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// DIR may be the state directory or the log directory.
std::string LogDirectory(const std::string& dir) {
  if (IsFile(dir + "/" + klog::kBaseFileName)) return dir;
  if (IsFile(dir + "/log/" + klog::kBaseFileName)) return dir + "/log";
  return "";
}

// The state directory whose lock covers the log in `log_dir`: a log directory lives in one
// (log/, or log.NAME with dedicated logs).
std::string StateDirectoryOf(const std::string& log_dir) {
  std::string d = log_dir;
  while (d.size() > 1 && d.back() == '/')
    d.pop_back();
  size_t slash = d.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : d.substr(0, slash);
}

void WarnIfInUse(const std::string& dir, const std::string& log_dir) {
  const std::string state = log_dir == dir ? StateDirectoryOf(log_dir) : dir;
  auto holder = ktmfs::fs::StateDirLockHolder(state);
  if (!holder) return;
  std::fprintf(stderr,
               "ktmfs-log: warning: %s is in use by the ktmfs daemon %s; the log may change "
               "while it is read\n",
               state.c_str(),
               *holder > 0 ? ("with pid " + std::to_string(*holder)).c_str() : "(pid unknown)");
}

std::string StreamName(const std::map<klog::StreamId, std::string>& names, klog::StreamId id) {
  auto it = names.find(id);
  return it != names.end() ? it->second : "#" + std::to_string(id);
}

// One line describing what a record says, for the types this tool knows.
std::string Describe(const klog::Record& r, const std::string& stream) {
  namespace tm = ktmfs::tm;
  if (r.type == klog::kRestartAreaRecordType) {
    if (stream == "tm") {
      auto live = tm::DecodeRestartArea(r, stream);
      if (!live.ok()) return "restart area (undecodable: " + live.status().message() + ")";
      return "restart area: " + std::to_string(live->size()) + " live transaction(s)";
    }
    return "restart area (" + std::to_string(r.payload.size()) + " bytes)";
  }
  if (stream == "tm" && tm::IsTmRecordType(r.type)) {
    auto rec = tm::DecodeTmRecord(r, stream);
    if (!rec.ok()) return "tm record (undecodable: " + rec.status().message() + ")";
    const std::string tx = rec->tx.id.ToString();
    switch (rec->type) {
      case tm::TmRecordType::kEnlist:
        return "enlist tx " + tx + " rm " + rec->enlistment.rm_name + " owner " +
               std::to_string(rec->tx.owner) +
               (rec->tx.description.empty() ? "" : " \"" + rec->tx.description + "\"");
      case tm::TmRecordType::kEnlistInfo:
        return "enlistment info tx " + tx + " rm " + rec->enlistment.rm.ToString() + " (" +
               std::to_string(rec->enlistment.info.size()) + " bytes)";
      case tm::TmRecordType::kCommit: {
        std::string rms;
        for (const auto& e : rec->tx.enlistments)
          rms += (rms.empty() ? "" : ",") + e.rm_name;
        return "commit decision tx " + tx + " rms " + rms;
      }
      case tm::TmRecordType::kAbort:
        return "abort decision tx " + tx;
      case tm::TmRecordType::kEnd:
        return "end tx " + tx;
    }
  }
  if (r.type == ktmfs::fstx::kFsRecordType) {
    namespace fstx = ktmfs::fstx;
    auto rec = fstx::DecodeRecord(r.payload, r.lsn);
    if (!rec.ok()) return "fs record (undecodable: " + rec.status().message() + ")";
    const std::string tx = " tx " + rec->tx.ToString();
    switch (rec->type) {
      case fstx::RecordType::kOp: {
        const fstx::Op& op = rec->op;
        std::string text = std::string(fstx::OpKindName(op.kind)) + tx + " " + op.path;
        if (!op.path2.empty()) text += " -> " + op.path2;
        if (op.kind == fstx::OpKind::kWriteExtent || op.kind == fstx::OpKind::kWriteData)
          text += " [" + std::to_string(op.offset) + ", +" + std::to_string(op.length) + ")";
        return text;
      }
      case fstx::RecordType::kPrepared:
        return "prepared" + tx + " (" + std::to_string(rec->op_count) + " ops, " +
               std::to_string(rec->staged_files.size()) + " staged files)";
      case fstx::RecordType::kCommitted:
        return "committed" + tx;
      case fstx::RecordType::kApplied:
        return "applied" + tx;
      case fstx::RecordType::kAborted:
        return "aborted" + tx;
      case fstx::RecordType::kRelogged:
        return "relogged" + tx + " (" + std::to_string(rec->ops.size()) + " ops carried forward)";
    }
  }
  return "type " + Hex(r.type) + " (" + std::to_string(r.payload.size()) + " bytes)";
}

void HexDump(const std::vector<std::byte>& bytes) {
  for (size_t i = 0; i < bytes.size(); i += 16) {
    std::printf("    %06zx ", i);
    for (size_t j = i; j < i + 16 && j < bytes.size(); ++j)
      std::printf(" %02x", static_cast<unsigned>(bytes[j]));
    std::printf("\n");
  }
}

struct StreamTally {
  uint64_t records = 0, bytes = 0, restart_areas = 0;
  klog::Lsn first = klog::kInvalidLsn, last = klog::kInvalidLsn;
};

struct Damage {
  std::string stream;  // empty when the message names it
  klog::Lsn begin = klog::kInvalidLsn, end = klog::kInvalidLsn;
  std::string message;
};

std::string ToText(const Damage& d) {
  if (d.stream.empty()) return d.message;
  return "log stream '" + d.stream + "': LSN " + Lsn(d.begin) + ": " + d.message + " (up to " +
         Lsn(d.end) + ")";
}

// LSNs as JSON numbers (they are byte positions, far below 2^53), "none" as null.
json JsonLsn(klog::Lsn lsn) {
  return lsn == klog::kInvalidLsn ? json(nullptr) : json(lsn);
}

json ToJson(const Damage& d) {
  return {{"stream", d.stream.empty() ? json(nullptr) : json(d.stream)},
          {"lsn", JsonLsn(d.begin)},
          {"end", JsonLsn(d.end)},
          {"message", ToText(d)}};
}

std::string HexString(const std::vector<std::byte>& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::byte b : bytes) {
    out += kDigits[static_cast<unsigned>(b) >> 4];
    out += kDigits[static_cast<unsigned>(b) & 15];
  }
  return out;
}

json RecordJson(const klog::Record& r, const std::string& stream, bool hex) {
  json j = {{"lsn", r.lsn},
            {"stream", stream},
            {"prev_lsn", JsonLsn(r.prev_lsn)},
            {"undo_next_lsn", JsonLsn(r.undo_next_lsn)},
            {"type", r.type},
            {"size", r.payload.size()},
            {"text", Describe(r, stream)}};
  namespace tm = ktmfs::tm;
  if (r.type == klog::kRestartAreaRecordType) {
    j["kind"] = "restart area";
  } else if (stream == "tm" && tm::IsTmRecordType(r.type)) {
    auto rec = tm::DecodeTmRecord(r, stream);
    if (rec.ok()) {
      static const std::map<tm::TmRecordType, const char*> kKinds = {
          {tm::TmRecordType::kEnlist, "enlist"},
          {tm::TmRecordType::kEnlistInfo, "enlist info"},
          {tm::TmRecordType::kCommit, "commit"},
          {tm::TmRecordType::kAbort, "abort"},
          {tm::TmRecordType::kEnd, "end"}};
      j["kind"] = kKinds.at(rec->type);
      j["tx"] = rec->tx.id.ToString();
      if (rec->type == tm::TmRecordType::kEnlist) j["rm"] = rec->enlistment.rm_name;
    }
  } else if (r.type == ktmfs::fstx::kFsRecordType) {
    namespace fstx = ktmfs::fstx;
    auto rec = fstx::DecodeRecord(r.payload, r.lsn);
    if (rec.ok()) {
      static const std::map<fstx::RecordType, const char*> kKinds = {
          {fstx::RecordType::kOp, "op"},
          {fstx::RecordType::kPrepared, "prepared"},
          {fstx::RecordType::kCommitted, "committed"},
          {fstx::RecordType::kApplied, "applied"},
          {fstx::RecordType::kAborted, "aborted"},
          {fstx::RecordType::kRelogged, "relogged"}};
      j["kind"] = kKinds.at(rec->type);
      j["tx"] = rec->tx.ToString();
      if (rec->type == fstx::RecordType::kOp) {
        j["op"] = fstx::OpKindName(rec->op.kind);
        j["path"] = rec->op.path;
        if (!rec->op.path2.empty()) j["path2"] = rec->op.path2;
      }
    }
  }
  if (hex) j["payload"] = HexString(r.payload);
  return j;
}

struct Options {
  std::string command;
  std::string only;
  bool hex = false;
  bool json = false;
  bool dry_run = false;
};

std::string Who(const logcheck::PlannedStep& p) {
  if (!p.owner_known) return "owner unknown";
  std::string who = "uid " + std::to_string(p.owner);
  if (const passwd* pw = getpwuid(p.owner)) who += " (" + std::string(pw->pw_name) + ")";
  if (!p.description.empty()) who += ", " + ktmfs::fs::QuotedForLog(p.description);
  return who;
}

// recover --dry-run: what the next mount would do. A damaged or inconsistent log stops the
// mount, so the plan is only printed for a log the mount would accept.
int PrintPlan(const logcheck::CheckReport& report, bool damaged, bool json_out) {
  using json = nlohmann::json;
  const bool refuse = damaged || !report.violations.empty();
  if (json_out) {
    json steps = json::array();
    for (const auto& p : report.plan)
      steps.push_back({{"tx", p.tx.ToString()},
                       {"stream", p.stream},
                       {"action", logcheck::ActionName(p.action)},
                       {"why", p.why},
                       {"owner_uid", p.owner_known ? json(p.owner) : json(nullptr)},
                       {"description", p.owner_known ? json(p.description) : json(nullptr)}});
    std::printf("%s\n", json{{"mount_would_refuse", refuse}, {"steps", steps}}.dump(2).c_str());
    return refuse ? kExitDamaged : kExitOk;
  }
  if (refuse) {
    std::printf("recover: the next mount would stop: the log is %s (see above)\n",
                damaged ? "damaged" : "inconsistent");
    return kExitDamaged;
  }
  if (report.plan.empty()) {
    std::printf("recover: nothing to do: every transaction in the log is finished\n");
    return kExitOk;
  }
  for (const auto& p : report.plan)
    std::printf("%-9s tx %s in %s (%s): %s\n", logcheck::ActionName(p.action),
                p.tx.ToString().c_str(), p.stream.c_str(), Who(p).c_str(), p.why.c_str());
  std::printf("recover: the next mount would settle %zu transaction(s); nothing was changed\n",
              report.plan.size());
  return kExitOk;
}

// Reads the whole log in LSN order. Damage stops the cursor; it is reported and the scan
// resumes stream by stream, so one bad record does not hide the rest.
int Walk(klog::Log* log, const Options& o) {
  std::map<klog::StreamId, std::string> names;
  for (const auto& s : log->Streams())
    names[s.id] = s.name;
  std::map<klog::StreamId, StreamTally> tally;
  std::vector<Damage> damage;
  const klog::LogGeometry g = log->geometry();
  std::optional<logcheck::ProtocolChecker> checker;
  const bool checking = o.command == "check" || o.command == "recover";
  if (checking) checker.emplace(log->Streams(), g.start_lsn);
  const bool dump = o.command == "dump";

  // Damaged ranges the open scan found are reported with stream and LSN, and reading goes on
  // after each, so one bad record does not hide the rest of the log.
  for (const auto& d : log->damaged_ranges())
    damage.push_back({StreamName(names, d.stream), d.begin, d.end, "damaged record"});
  if (!o.json) {
    for (const auto& d : damage)
      std::printf("DAMAGE: %s\n", ToText(d).c_str());
  }
  // A dump can be as large as the log: its JSON is written record by record.
  if (dump && o.json) std::printf("{\"records\": [");
  bool first_record = true;
  auto on_damage = [&](klog::Lsn begin, klog::Lsn end, const std::string& message) {
    // A range the open scan found is reported above already.
    if (!message.empty()) {
      damage.push_back({"", begin, klog::kInvalidLsn, message});
      if (!o.json) std::printf("DAMAGE: %s\n", message.c_str());
    }
    if (checker) checker->Damaged(begin, end);
  };
  auto on_record = [&](const klog::Record& r) {
    const std::string stream = StreamName(names, r.stream);
    StreamTally& t = tally[r.stream];
    ++t.records;
    t.bytes += r.payload.size();
    if (r.type == klog::kRestartAreaRecordType) ++t.restart_areas;
    if (t.first == klog::kInvalidLsn) t.first = r.lsn;
    t.last = r.lsn;
    if (checker) checker->Add(r);
    if (dump && (o.only.empty() || o.only == stream)) {
      if (o.json) {
        std::printf("%s\n  %s", first_record ? "" : ",",
                    RecordJson(r, stream, o.hex).dump().c_str());
        first_record = false;
        return;
      }
      std::printf("%-14s %-10s prev %-14s undo %-14s %s\n", Lsn(r.lsn).c_str(), stream.c_str(),
                  Lsn(r.prev_lsn).c_str(), Lsn(r.undo_next_lsn).c_str(),
                  Describe(r, stream).c_str());
      if (o.hex) HexDump(r.payload);
    }
  };
  ktmfs::tools::ReadPastDamage(log, on_record, on_damage);

  const klog::LogStats st = log->stats();
  const bool torn = st.torn_tail_cut_in_block != 0;
  json damage_json = json::array();
  for (const auto& d : damage)
    damage_json.push_back(ToJson(d));
  const int rc = damage.empty() ? kExitOk : kExitDamaged;

  if (o.json) {
    json out;
    if (o.command == "stat") {
      json streams = json::array();
      for (const auto& s : log->Streams()) {
        const StreamTally& t = tally[s.id];
        streams.push_back({{"id", s.id},
                           {"name", s.name},
                           {"records", t.records},
                           {"bytes", t.bytes},
                           {"base_lsn", JsonLsn(s.base_lsn)},
                           {"first_lsn", JsonLsn(t.first)},
                           {"last_lsn", JsonLsn(t.last)},
                           {"restart_lsn", JsonLsn(s.restart_lsn)},
                           {"restart_areas", t.restart_areas}});
      }
      out = {{"format_version", g.format_version}, {"block_size", g.block_size},
             {"container_size", g.container_size}, {"containers", g.containers},
             {"max_containers", g.max_containers}, {"start_lsn", JsonLsn(g.start_lsn)},
             {"end_lsn", JsonLsn(log->end_lsn())}, {"streams", streams}};
    } else if (o.command == "recover") {
      return PrintPlan(checker->Finish(), !damage.empty(), true);
    } else if (o.command == "check") {
      const logcheck::CheckReport report = checker->Finish();
      json violations = json::array(), in_flight = json::array();
      for (const auto& v : report.violations)
        violations.push_back({{"stream", v.stream},
                              {"lsn", JsonLsn(v.lsn)},
                              {"tx", v.tx.IsNil() ? json(nullptr) : json(v.tx.ToString())},
                              {"what", v.what},
                              {"message", logcheck::ToString(v)}});
      for (const auto& f : report.in_flight)
        in_flight.push_back({{"stream", f.stream},
                             {"tx", f.tx.ToString()},
                             {"state", f.state},
                             {"first_lsn", JsonLsn(f.first)},
                             {"last_lsn", JsonLsn(f.last)}});
      const bool bad = !damage.empty() || !report.violations.empty();
      out = {{"result", !damage.empty()              ? "damaged"
                        : !report.violations.empty() ? "violations"
                                                     : "ok"},
             {"records", report.records},
             {"transactions", report.transactions},
             {"violations", violations},
             {"in_flight", in_flight},
             {"unchecked_streams", report.unchecked}};
      out["damage"] = damage_json;
      out["torn_tail"] = torn;
      std::printf("%s\n", out.dump(2).c_str());
      return bad ? kExitDamaged : kExitOk;
    } else if (o.command == "verify") {
      out = {{"result", damage.empty() ? "ok" : "damaged"}};
    }
    if (dump) {
      std::printf("\n],\n\"damage\": %s,\n\"torn_tail\": %s}\n", damage_json.dump().c_str(),
                  torn ? "true" : "false");
      return rc;
    }
    out["damage"] = damage_json;
    out["torn_tail"] = torn;
    std::printf("%s\n", out.dump(2).c_str());
    return rc;
  }

  if (o.command == "stat") {
    std::printf("format version   %u\n", g.format_version);
    std::printf("block size       %u\n", g.block_size);
    std::printf("container size   %" PRIu64 "\n", g.container_size);
    std::printf("containers       %u of at most %u\n", g.containers, g.max_containers);
    std::printf("oldest needed    %s\n", Lsn(g.start_lsn).c_str());
    std::printf("end              %s\n", Lsn(log->end_lsn()).c_str());
    std::printf("\n%-4s %-16s %8s %10s %-14s %-14s %-14s %-14s %s\n", "ID", "STREAM", "RECORDS",
                "BYTES", "BASE", "FIRST", "LAST", "RESTART", "RESTARTS");
    for (const auto& s : log->Streams()) {
      const StreamTally& t = tally[s.id];
      std::printf("%-4u %-16s %8" PRIu64 " %10" PRIu64 " %-14s %-14s %-14s %-14s %" PRIu64 "\n",
                  s.id, s.name.c_str(), t.records, t.bytes, Lsn(s.base_lsn).c_str(),
                  Lsn(t.first).c_str(), Lsn(t.last).c_str(), Lsn(s.restart_lsn).c_str(),
                  t.restart_areas);
    }
    std::printf("\n");
  }
  if (torn) std::printf("tail: torn inside a block; the log ends at the last valid record\n");
  if (o.command == "recover") {
    const logcheck::CheckReport report = checker->Finish();
    for (const auto& v : report.violations)
      std::printf("VIOLATION: %s\n", logcheck::ToString(v).c_str());
    return PrintPlan(report, !damage.empty(), false);
  }
  if (o.command == "check") {
    const logcheck::CheckReport report = checker->Finish();
    for (const auto& v : report.violations)
      std::printf("VIOLATION: %s\n", logcheck::ToString(v).c_str());
    for (const auto& s : report.unchecked)
      std::printf("not checked: stream %s (neither the TM's nor a filesystem RM's)\n", s.c_str());
    for (const auto& f : report.in_flight)
      std::printf("in flight at the end of the log: %s\n", logcheck::ToString(f).c_str());
    const char* verdict = !damage.empty()              ? "DAMAGED"
                          : !report.violations.empty() ? "PROTOCOL VIOLATED"
                                                       : "OK";
    std::printf("check: %s (%" PRIu64 " records, %" PRIu64
                " transactions, %zu violations, %zu "
                "in flight)\n",
                verdict, report.records, report.transactions, report.violations.size(),
                report.in_flight.size());
    return !damage.empty() || !report.violations.empty() ? kExitDamaged : kExitOk;
  }
  if (o.command == "verify" || !damage.empty()) {
    std::printf("%s\n", damage.empty() ? "verify: OK" : "verify: DAMAGED");
    return rc;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  enum { kHelp = 256, kVersion };
  static const option kOptions[] = {{"stream", required_argument, nullptr, 's'},
                                    {"hex", no_argument, nullptr, 'x'},
                                    {"json", no_argument, nullptr, 'j'},
                                    {"dry-run", no_argument, nullptr, 'n'},
                                    {"help", no_argument, nullptr, kHelp},
                                    {"version", no_argument, nullptr, kVersion},
                                    {nullptr, 0, nullptr, 0}};
  Options o;
  int c;
  while ((c = getopt_long(argc, argv, "s:xjn", kOptions, nullptr)) != -1) {
    switch (c) {
      case 's':
        o.only = optarg;
        break;
      case 'x':
        o.hex = true;
        break;
      case 'j':
        o.json = true;
        break;
      case 'n':
        o.dry_run = true;
        break;
      case kHelp:
        Usage(stdout);
        return kExitOk;
      case kVersion:
        std::printf("ktmfs-log (ktmfs) %s\n", KTMFS_VERSION);
        return kExitOk;
      default:
        Usage(stderr);
        return kExitUsage;
    }
  }
  if (argc - optind != 2) {
    std::fprintf(stderr, "ktmfs-log: expected a command and a directory\n");
    Usage(stderr);
    return kExitUsage;
  }
  o.command = argv[optind];
  const std::string dir = argv[optind + 1];
  if (o.command != "dump" && o.command != "verify" && o.command != "stat" && o.command != "check" &&
      o.command != "recover" && o.command != "salvage") {
    std::fprintf(stderr,
                 "ktmfs-log: unknown command '%s' (dump, verify, stat, check, recover or "
                 "salvage)\n",
                 o.command.c_str());
    return kExitUsage;
  }
  if (o.command == "recover" && !o.dry_run) {
    std::fprintf(stderr,
                 "ktmfs-log: recover needs --dry-run: recovery itself runs when the directory is "
                 "mounted (ktmfs(8)); --dry-run says what it would do\n");
    return kExitUsage;
  }
  const std::string log_dir = LogDirectory(dir);
  if (log_dir.empty()) {
    std::fprintf(stderr, "ktmfs-log: %s: no ktmfs log here (neither %s nor log/%s)\n", dir.c_str(),
                 klog::kBaseFileName, klog::kBaseFileName);
    return kExitCannotOpen;
  }
  if (o.command == "salvage") {
    return ktmfs::tools::RunSalvage(log_dir, log_dir == dir ? StateDirectoryOf(log_dir) : dir,
                                    o.dry_run, o.json);
  }
  WarnIfInUse(dir, log_dir);
  auto storage = klog::OpenUringStorage(log_dir);
  if (!storage.ok()) {
    std::fprintf(stderr, "ktmfs-log: %s: %s\n", log_dir.c_str(),
                 storage.status().ToString().c_str());
    return kExitCannotOpen;
  }
  klog::LogOptions options;
  options.read_only = true;
  auto log = klog::Log::Open(storage->get(), options, /*create_if_missing=*/false);
  if (!log.ok()) {
    // Damage that stops the open (both base file copies bad, say) is still damage.
    std::fprintf(stderr, "ktmfs-log: %s\n", log.status().ToString().c_str());
    return log.status().IsCorruption() ? kExitDamaged : kExitCannotOpen;
  }
  int rc = Walk(log->get(), o);
  (void)(*log)->Close();
  return rc;
}

// ktmfs-log: offline inspection of a ktmfs log (dump, verify, stat). See ktmfs-log(8).
//
// The log is opened read-only (LogOptions::read_only): inspecting a log, even a damaged one,
// never changes a byte of it, so it is safe on the log of a crashed mount before recovery. A
// log a running daemon holds is read too, with a warning: it may change while it is read.
#include <getopt.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "fs/state_lock.h"
#include "fs/tx/records.h"
#include "ktmfs_config.h"
#include "log/base_file.h"
#include "log/log.h"
#include "src/tm_records.h"

namespace {

using ktmfs::Result;
using ktmfs::Status;
namespace klog = ktmfs::log;

constexpr int kExitOk = 0;
constexpr int kExitDamaged = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCannotOpen = 3;

void Usage(FILE* out) {
  std::fprintf(
      out,
      "Usage: ktmfs-log [-s STREAM] [-x] dump|verify|stat DIR\n"
      "Inspect the ktmfs log in DIR, a state directory (the log is in DIR/log) or a log\n"
      "directory itself, without changing it.\n"
      "\n"
      "  dump     print every record in LSN order, decoded where its type is known\n"
      "  verify   read every record of every stream; report damage with stream and LSN\n"
      "  stat     geometry, streams, LSN ranges, record counts and restart areas\n"
      "\n"
      "  -s, --stream=NAME   dump only this stream\n"
      "  -x, --hex           dump: also print each payload in hexadecimal\n"
      "      --help          show this help and exit\n"
      "      --version       show the version and exit\n"
      "\n"
      "Exit status: 0 the log is sound (a torn tail cut at the last valid record\n"
      "counts as sound), 1 damage was found, 2 usage error, 3 the log cannot be opened.\n");
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

std::string Lsn(klog::Lsn lsn) {
  return lsn == klog::kInvalidLsn ? "-" : Hex(lsn);
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

// Reads the whole log in LSN order. Damage stops the cursor; it is reported and the scan
// resumes stream by stream, so one bad record does not hide the rest.
int Walk(klog::Log* log, const std::string& command, const std::string& only, bool hex) {
  std::map<klog::StreamId, std::string> names;
  for (const auto& s : log->Streams())
    names[s.id] = s.name;
  std::map<klog::StreamId, StreamTally> tally;
  int damage = 0;

  // Damaged ranges the open scan found are reported with stream and LSN, and reading goes on
  // after each, so one bad record does not hide the rest of the log.
  for (const auto& d : log->damaged_ranges()) {
    std::printf("DAMAGE: log stream %s: LSN %s: damaged record (up to %s)\n",
                ("'" + StreamName(names, d.stream) + "'").c_str(), Lsn(d.begin).c_str(),
                Lsn(d.end).c_str());
    ++damage;
  }
  klog::Lsn from = klog::kInvalidLsn, last_read = klog::kInvalidLsn;
  klog::Record r;
  for (bool resumed = true; resumed;) {
    resumed = false;
    auto cursor = log->ReadAll(from);
    for (;;) {
      auto more = cursor->Next(&r);
      if (!more.ok()) {
        // In a damaged range the scan found (reported above): go on after it.
        for (const auto& d : log->damaged_ranges()) {
          if (d.end > last_read && d.end > from) {
            from = d.end;
            resumed = true;
            break;
          }
        }
        if (!resumed) {
          std::printf("DAMAGE: %s\n", more.status().message().c_str());
          ++damage;
        }
        break;
      }
      if (!*more) break;
      last_read = r.lsn;
      const std::string stream = StreamName(names, r.stream);
      StreamTally& t = tally[r.stream];
      ++t.records;
      t.bytes += r.payload.size();
      if (r.type == klog::kRestartAreaRecordType) ++t.restart_areas;
      if (t.first == klog::kInvalidLsn) t.first = r.lsn;
      t.last = r.lsn;
      if (command == "dump" && (only.empty() || only == stream)) {
        std::printf("%-14s %-10s prev %-14s undo %-14s %s\n", Lsn(r.lsn).c_str(), stream.c_str(),
                    Lsn(r.prev_lsn).c_str(), Lsn(r.undo_next_lsn).c_str(),
                    Describe(r, stream).c_str());
        if (hex) HexDump(r.payload);
      }
    }
  }

  const klog::LogStats st = log->stats();
  if (command == "stat") {
    const klog::LogGeometry g = log->geometry();
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
  if (st.torn_tail_cut_in_block)
    std::printf("tail: torn inside a block; the log ends at the last valid record\n");
  if (command == "verify" || damage) {
    bool bad = damage != 0;
    std::printf("%s\n", bad ? "verify: DAMAGED" : "verify: OK");
    return bad ? kExitDamaged : kExitOk;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  enum { kHelp = 256, kVersion };
  static const option kOptions[] = {{"stream", required_argument, nullptr, 's'},
                                    {"hex", no_argument, nullptr, 'x'},
                                    {"help", no_argument, nullptr, kHelp},
                                    {"version", no_argument, nullptr, kVersion},
                                    {nullptr, 0, nullptr, 0}};
  std::string only;
  bool hex = false;
  int c;
  while ((c = getopt_long(argc, argv, "s:x", kOptions, nullptr)) != -1) {
    switch (c) {
      case 's':
        only = optarg;
        break;
      case 'x':
        hex = true;
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
  const std::string command = argv[optind], dir = argv[optind + 1];
  if (command != "dump" && command != "verify" && command != "stat") {
    std::fprintf(stderr, "ktmfs-log: unknown command '%s' (dump, verify or stat)\n",
                 command.c_str());
    return kExitUsage;
  }
  const std::string log_dir = LogDirectory(dir);
  if (log_dir.empty()) {
    std::fprintf(stderr, "ktmfs-log: %s: no ktmfs log here (neither %s nor log/%s)\n", dir.c_str(),
                 klog::kBaseFileName, klog::kBaseFileName);
    return kExitCannotOpen;
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
  int rc = Walk(log->get(), command, only, hex);
  (void)(*log)->Close();
  return rc;
}

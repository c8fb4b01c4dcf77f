// txstat: lists the transactions of a ktmfs mount, or shows one in detail. See txstat(1).
#include <getopt.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/tool_common.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "Usage: txstat [--json] [--recent] [PATH] [ID]\n"
               "List the transactions of the ktmfs mount holding PATH (default: the current\n"
               "directory), or show transaction ID in detail.\n"
               "\n"
               "  -j, --json      print JSON instead of a table\n"
               "  -r, --recent    list the transactions that ended lately, newest first, with\n"
               "                  their outcome (those recovery settled at mount included)\n"
               "      --help      show this help and exit\n"
               "      --version   show the version and exit\n"
               "\n"
               "Exit status: 0 listed, 1 failed (or ID not found), 2 usage error,\n"
               "4 not a ktmfs mount.\n");
}

const char* StateName(uint32_t state, uint32_t flags) {
  if (flags & KTMFS_TXF_APPLY_PENDING) return "apply-pending";
  if (flags & KTMFS_TXF_OUTCOME_UNKNOWN) return "outcome-unknown";
  switch (state) {
    case KTMFS_STATE_ACTIVE:
      return "active";
    case KTMFS_STATE_PREPARING:
      return "preparing";
    case KTMFS_STATE_PREPARED:
      return "prepared";
    case KTMFS_STATE_COMMITTING:
      return "committing";
    case KTMFS_STATE_COMMITTED:
      return "committed";
    case KTMFS_STATE_ROLLING_BACK:
      return "rolling-back";
    case KTMFS_STATE_ROLLED_BACK:
      return "rolled-back";
    default:
      return "unknown";
  }
}

const char* ScopeName(uint32_t scope) {
  switch (scope) {
    case KTMFS_SCOPE_THREAD:
      return "thread";
    case KTMFS_SCOPE_PROCESS:
      return "process";
    case KTMFS_SCOPE_TREE:
      return "tree";
    default:
      return "none";
  }
}

std::string UserName(uint32_t uid) {
  if (uid == KTMFS_UID_UNKNOWN) return "-";
  if (const passwd* pw = getpwuid(uid)) return pw->pw_name;
  return std::to_string(uid);
}

// Fixed-size C strings from the daemon are not trusted to be terminated.
std::string Field(const char* s, size_t size) {
  return std::string(s, strnlen(s, size));
}

// A description as a user gave it may hold any bytes but NUL: terminal escapes, newlines, bytes
// that are not UTF-8 (which JSON cannot carry: the encoder throws). Those print as \xNN, and a
// backslash as \\, so root's listing shows every transaction, unambiguously and inertly.
std::string Shown(const std::string& s) {
  std::string out;
  auto escape = [&out](unsigned char c) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      out += "\\\\";
      ++i;
      continue;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A whole, shortest-form UTF-8 sequence of a character that is not a control character or a
    // surrogate passes as it is.
    size_t n = c >= 0xc2 && c <= 0xdf   ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (size_t k = 1; k < n; ++k) {
      const auto d = i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0;
      if ((d & 0xc0) != 0x80) {
        n = 0;
        break;
      }
      cp = cp << 6 | (d & 0x3f);
    }
    const bool valid = n != 0 && !(n == 3 && cp < 0x800) &&
                       !(n == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
                       !(cp >= 0xd800 && cp <= 0xdfff) && !(cp >= 0x80 && cp < 0xa0);
    if (!valid) {
      escape(c);
      ++i;
      continue;
    }
    out.append(s, i, n);
    i += n;
  }
  return out;
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::string Age(uint64_t begin_ns) {
  if (begin_ns == 0) return "-";  // not known: recovered at mount
  uint64_t now = NowNs();
  uint64_t s = now > begin_ns ? (now - begin_ns) / 1000000000ull : 0;
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llus", static_cast<unsigned long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60));
  return buf;
}

std::string Bytes(uint64_t n) {
  static const char* kUnits[] = {"B", "K", "M", "G", "T"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(n));
  else
    std::snprintf(buf, sizeof buf, "%.1f%s", v, kUnits[u]);
  return buf;
}

nlohmann::json ToJson(const ktmfs_tx_info& t) {
  return {{"id", Field(t.id, sizeof t.id)},
          {"owner_uid", t.owner_uid},
          {"owner", UserName(t.owner_uid)},
          {"bound_pid", t.bound_pid},
          {"scope", ScopeName(t.scope)},
          {"state", StateName(t.state, t.flags)},
          {"apply_pending", (t.flags & KTMFS_TXF_APPLY_PENDING) != 0},
          {"outcome_unknown", (t.flags & KTMFS_TXF_OUTCOME_UNKNOWN) != 0},
          {"begin_time_ns", t.begin_time_ns},
          {"age_seconds",
           t.begin_time_ns == 0
               ? nlohmann::json(nullptr)
               : nlohmann::json((NowNs() - std::min(NowNs(), t.begin_time_ns)) / 1000000000ull)},
          {"timeout_seconds", t.timeout_sec},
          {"resource_managers", t.rm_count},
          {"objects_locked", t.objects_locked},
          {"bytes_logged", t.bytes_logged},
          {"name", Shown(Field(t.name, sizeof t.name))}};
}

const char* OutcomeName(uint32_t outcome, uint32_t flags) {
  switch (outcome) {
    case KTMFS_OUTCOME_COMMITTED:
      return flags & KTMFS_TXF_APPLY_PENDING ? "apply-pending" : "committed";
    case KTMFS_OUTCOME_ROLLED_BACK:
      return "rolled-back";
    case KTMFS_OUTCOME_COMMIT_FAILED:
      return "commit-failed";
    default:
      return "unknown";
  }
}

// Why it ended as it did, in words for the table: the daemon's reason, else what the flags say.
std::string Why(const ktmfs_ended_info& t) {
  std::string reason = Field(t.reason, sizeof t.reason);
  if (!reason.empty()) return Shown(reason);
  if (t.flags & KTMFS_TXF_RECOVERED) return "recovered at mount";
  if (t.outcome == KTMFS_OUTCOME_ROLLED_BACK) return "by request";
  return "";
}

nlohmann::json ToJson(const ktmfs_ended_info& t) {
  return {{"id", Field(t.id, sizeof t.id)},
          {"owner_uid", t.owner_uid},
          {"owner", UserName(t.owner_uid)},
          {"bound_pid", t.bound_pid},
          {"outcome", OutcomeName(t.outcome, t.flags)},
          {"apply_pending", (t.flags & KTMFS_TXF_APPLY_PENDING) != 0},
          {"recovered", (t.flags & KTMFS_TXF_RECOVERED) != 0},
          {"begin_time_ns", t.begin_time_ns},
          {"end_time_ns", t.end_time_ns},
          {"ended_seconds_ago", (NowNs() - std::min(NowNs(), t.end_time_ns)) / 1000000000ull},
          {"name", Shown(Field(t.name, sizeof t.name))},
          {"reason", Why(t)}};
}

// Pages through a table the daemon hands out KTMFS_LIST_MAX or KTMFS_RECENT_MAX at a time.
template <typename Args, typename Entry>
int FetchPages(int fd, const std::string& path, const char* what, uint32_t page,
               int (*fetch)(int, Args*), std::vector<Entry>* out) {
  auto args = std::make_unique<Args>();
  uint32_t start = 0;
  for (;;) {
    std::memset(args.get(), 0, sizeof *args);
    args->start = start;
    args->capacity = page;
    int rc = fetch(fd, args.get());
    if (rc != 0) return ktmfs::tools::ReportError(fd, path, what, rc);
    uint32_t n = std::min<uint32_t>(args->count, page);
    out->insert(out->end(), args->entries, args->entries + n);
    start += n;
    if (n == 0 || start >= args->total) return KTMFS_EXIT_OK;
  }
}

// Prints one entry in detail, a field per line, or as JSON.
void PrintDetail(const nlohmann::json& detail, bool json) {
  if (json) {
    std::printf("%s\n", detail.dump(2).c_str());
    return;
  }
  for (const auto& [key, value] : detail.items())
    std::printf("%-18s %s\n", (key + ":").c_str(),
                value.is_string() ? value.get<std::string>().c_str() : value.dump().c_str());
}

// The entry with this id, as JSON, or null.
template <typename Entry>
nlohmann::json FindById(const std::vector<Entry>& entries, const std::string& id) {
  for (const auto& t : entries)
    if (strcasecmp(Field(t.id, sizeof t.id).c_str(), id.c_str()) == 0) return ToJson(t);
  return nullptr;
}

// One entry in detail (with an id), or all as JSON, or all as the table `table` prints.
template <typename Entry>
int Show(const std::vector<Entry>& entries, const std::string& path, const std::string& id,
         bool json, const char* what, void (*table)(const std::vector<Entry>&)) {
  if (!id.empty()) {
    const nlohmann::json detail = FindById(entries, id);
    if (detail.is_null()) {
      ktmfs::tools::Warn("%s: no %s %s", path.c_str(), what, id.c_str());
      return KTMFS_EXIT_FAILED;
    }
    PrintDetail(detail, json);
    return KTMFS_EXIT_OK;
  }
  if (json) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& t : entries)
      all.push_back(ToJson(t));
    std::printf("%s\n", all.dump(2).c_str());
    return KTMFS_EXIT_OK;
  }
  table(entries);
  return KTMFS_EXIT_OK;
}

void RecentTable(const std::vector<ktmfs_ended_info>& recent) {
  std::printf("%-36s  %-8s %7s  %-13s %7s  %-24s %s\n", "ID", "OWNER", "PID", "OUTCOME", "ENDED",
              "NAME", "WHY");
  for (const auto& t : recent) {
    std::printf("%-36s  %-8s %7d  %-13s %7s  %-24s %s\n", Field(t.id, sizeof t.id).c_str(),
                UserName(t.owner_uid).c_str(), t.bound_pid, OutcomeName(t.outcome, t.flags),
                Age(t.end_time_ns).c_str(), Shown(Field(t.name, sizeof t.name)).c_str(),
                Why(t).c_str());
  }
}

void LiveTable(const std::vector<ktmfs_tx_info>& txs) {
  std::printf("%-36s  %-8s %7s  %-15s %7s %3s %6s %7s  %s\n", "ID", "OWNER", "PID", "STATE", "AGE",
              "RMS", "LOCKED", "LOGGED", "NAME");
  for (const auto& t : txs) {
    std::printf("%-36s  %-8s %7d  %-15s %7s %3u %6u %7s  %s\n", Field(t.id, sizeof t.id).c_str(),
                UserName(t.owner_uid).c_str(), t.bound_pid, StateName(t.state, t.flags),
                Age(t.begin_time_ns).c_str(), t.rm_count, t.objects_locked,
                Bytes(t.bytes_logged).c_str(), Shown(Field(t.name, sizeof t.name)).c_str());
  }
}

int FetchAll(int fd, const std::string& path, std::vector<ktmfs_tx_info>* out) {
  return FetchPages(fd, path, "list", KTMFS_LIST_MAX, ktmfs_list_transactions, out);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ktmfs::tools;
  SetProgramName(argv[0]);
  argv[0] = const_cast<char*>(ProgramName());  // getopt names the tool, not its path
  static const option kOptions[] = {{"json", no_argument, nullptr, 'j'},
                                    {"recent", no_argument, nullptr, 'r'},
                                    {"help", no_argument, nullptr, kHelpOption},
                                    {"version", no_argument, nullptr, kVersionOption},
                                    {nullptr, 0, nullptr, 0}};
  bool json = false, recent = false;
  int c;
  while ((c = getopt_long(argc, argv, "jr", kOptions, nullptr)) != -1) {
    switch (c) {
      case 'j':
        json = true;
        break;
      case 'r':
        recent = true;
        break;
      default:
        return EndOptions(c, Usage, KTMFS_EXIT_USAGE);
    }
  }
  // Positionals: an argument that looks like an id is the id; the other is the path.
  std::string path = ".", id;
  bool have_path = false;
  for (int i = optind; i < argc; ++i) {
    std::string arg = argv[i];
    bool looks_like_id = arg.size() == KTMFS_ID_LEN && arg.find('/') == std::string::npos &&
                         arg.find_first_not_of("0123456789abcdefABCDEF-") == std::string::npos;
    if (looks_like_id && id.empty()) {
      id = arg;
    } else if (!have_path) {
      path = arg;
      have_path = true;
    } else {
      Warn("too many arguments");
      Usage(stderr);
      return KTMFS_EXIT_USAGE;
    }
  }

  int code;
  int fd = OpenMount(path, &code);
  if (fd < 0) return code;
  if (recent) {
    std::vector<ktmfs_ended_info> ended;
    code = FetchPages(fd, path, "list recent transactions", KTMFS_RECENT_MAX,
                      ktmfs_recent_transactions, &ended);
    close(fd);
    if (code != KTMFS_EXIT_OK) return code;
    return Show(ended, path, id, json, "recently ended transaction", RecentTable);
  }
  std::vector<ktmfs_tx_info> txs;
  code = FetchAll(fd, path, &txs);
  close(fd);
  if (code != KTMFS_EXIT_OK) return code;
  return Show(txs, path, id, json, "transaction", LiveTable);
}

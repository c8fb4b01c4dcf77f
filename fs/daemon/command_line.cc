#include "fs/daemon/command_line.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <fuse_opt.h>
#include <limits.h>
#include <stdlib.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "ktmfs_config.h"

namespace ktmfs::fs {
namespace {

enum Key {
  kKeyHelp,
  kKeyVersion,
  kKeyState,
  kKeyLog,
  kKeyLogSize,
  kKeyMaxUserTransactions,
  kKeyMaxUserMemory,
  kKeyNodeDescriptors,
  kKeyMaxUserDescriptors,
  kKeyEntryTimeout,
  kKeyAttrTimeout,
  kKeyNegativeTimeout,
  kKeyWriteback,
  kKeyNoWriteback,
  kKeyKeepCache,
  kKeyNoKeepCache,
  kKeyKillprivV2,
  kKeyNoKillprivV2,
  kKeyPassthrough,
  kKeyNoPassthrough,
  kKeyUring,
  kKeyNoUring,
  kKeyUringEntries,
  kKeyRemount,
  kKeyReadOnly,
  kKeyReadWrite,
  kKeyDefaultPermissions,
  kKeyAllowOther,
  kKeyNonEmpty,
};

const fuse_opt kOptionSpecs[] = {
    FUSE_OPT_KEY("-h", kKeyHelp),
    FUSE_OPT_KEY("--help", kKeyHelp),
    FUSE_OPT_KEY("-V", kKeyVersion),
    FUSE_OPT_KEY("--version", kKeyVersion),
    FUSE_OPT_KEY("state=", kKeyState),
    FUSE_OPT_KEY("log=", kKeyLog),
    FUSE_OPT_KEY("log_size=", kKeyLogSize),
    FUSE_OPT_KEY("max_user_transactions=", kKeyMaxUserTransactions),
    FUSE_OPT_KEY("max_user_memory=", kKeyMaxUserMemory),
    FUSE_OPT_KEY("node_descriptors=", kKeyNodeDescriptors),
    FUSE_OPT_KEY("max_user_descriptors=", kKeyMaxUserDescriptors),
    FUSE_OPT_KEY("entry_timeout=", kKeyEntryTimeout),
    FUSE_OPT_KEY("attr_timeout=", kKeyAttrTimeout),
    FUSE_OPT_KEY("negative_timeout=", kKeyNegativeTimeout),
    FUSE_OPT_KEY("writeback", kKeyWriteback),
    FUSE_OPT_KEY("nowriteback", kKeyNoWriteback),
    FUSE_OPT_KEY("keep_cache", kKeyKeepCache),
    FUSE_OPT_KEY("nokeep_cache", kKeyNoKeepCache),
    FUSE_OPT_KEY("killpriv_v2", kKeyKillprivV2),
    FUSE_OPT_KEY("nokillpriv_v2", kKeyNoKillprivV2),
    FUSE_OPT_KEY("passthrough", kKeyPassthrough),
    FUSE_OPT_KEY("nopassthrough", kKeyNoPassthrough),
    FUSE_OPT_KEY("uring", kKeyUring),
    FUSE_OPT_KEY("nouring", kKeyNoUring),
    FUSE_OPT_KEY("uring_entries=", kKeyUringEntries),
    FUSE_OPT_KEY("remount", kKeyRemount),
    FUSE_OPT_KEY("ro", kKeyReadOnly),
    FUSE_OPT_KEY("rw", kKeyReadWrite),
    // Seen and kept: libfuse passes them to the kernel, the daemon adapts its checks to them.
    FUSE_OPT_KEY("default_permissions", kKeyDefaultPermissions),
    FUSE_OPT_KEY("allow_other", kKeyAllowOther),
    // Consent to hide what the mountpoint holds (libfuse 3 mounts there anyway, silently).
    FUSE_OPT_KEY("nonempty", kKeyNonEmpty),
    FUSE_OPT_END,
};

struct ParseState {
  CommandLine* cl;
  std::string error;
  bool have_source = false;
};

const char* ValueOf(const char* arg) {
  return std::strchr(arg, '=') + 1;
}

// "64M", "1G", "8388608": bytes with an optional K, M or G (powers of 1024).
bool ParseSize(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || errno != 0 || text[0] == '-') return false;
  int shift = 0;
  switch (*end) {
    case 'K':
    case 'k':
      shift = 10;
      break;
    case 'M':
    case 'm':
      shift = 20;
      break;
    case 'G':
    case 'g':
      shift = 30;
      break;
    default:
      break;
  }
  if (shift != 0) end++;
  const uint64_t unit = uint64_t{1} << shift;
  if (*end != '\0' || v > (UINT64_MAX >> 30)) return false;
  *out = v * unit;
  return true;
}

bool ParseSeconds(const char* text, double* out) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= 0.0)) return false;
  *out = v;
  return true;
}

int ProcessArg(void* data, const char* arg, int key, fuse_args* /*outargs*/) {
  auto* st = static_cast<ParseState*>(data);
  Options& o = st->cl->options;
  switch (key) {
    case kKeyHelp:
      st->cl->action = CommandLine::Action::kHelp;
      return 0;
    case kKeyVersion:
      st->cl->action = CommandLine::Action::kVersion;
      return 0;
    case kKeyState:
      o.state_dir = ValueOf(arg);
      if (o.state_dir.empty()) st->error = "-o state= needs a directory";
      return 0;
    case kKeyLog: {
      std::string v = ValueOf(arg);
      if (v == "multiplexed") {
        o.log_mode = LogMode::kMultiplexed;
      } else if (v == "dedicated") {
        o.log_mode = LogMode::kDedicated;
      } else {
        st->error = "-o log=" + v + ": expected log=multiplexed or log=dedicated";
      }
      return 0;
    }
    case kKeyLogSize:
      // At least 4 MiB: the log keeps a reserve for commits, rollbacks and recovery, and a
      // restart area per stream, which leave too little for transactions in less.
      if (!ParseSize(ValueOf(arg), &o.log_size) || o.log_size < (4ull << 20) ||
          o.log_size > (64ull << 30)) {
        st->error = std::string("-o ") + arg + ": expected a size from 4M to 64G";
      }
      return 0;
    case kKeyMaxUserTransactions: {
      uint64_t n = 0;
      const std::string v = ValueOf(arg);
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
          !ParseSize(v.c_str(), &n) || n > 1000000) {
        st->error = std::string("-o ") + arg + ": expected a number from 0 (no cap) to 1000000";
      } else {
        o.user_caps.transactions = static_cast<uint32_t>(n);
      }
      return 0;
    }
    case kKeyMaxUserMemory:
      if (!ParseSize(ValueOf(arg), &o.user_caps.memory) || o.user_caps.memory > (1ull << 40)) {
        st->error = std::string("-o ") + arg + ": expected a size up to 1024G (0: no cap)";
      }
      return 0;
    case kKeyMaxUserDescriptors: {
      const std::string v = ValueOf(arg);
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
          !ParseSize(v.c_str(), &o.user_caps.descriptors) || o.user_caps.descriptors > 100000000) {
        st->error = std::string("-o ") + arg + ": expected a number from 0 (no cap) to 100000000";
      }
      return 0;
    }
    case kKeyNodeDescriptors: {
      const std::string v = ValueOf(arg);
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
          !ParseSize(v.c_str(), &o.node_descriptors) || o.node_descriptors > 100000000 ||
          (o.node_descriptors != 0 && o.node_descriptors < 16)) {
        st->error = std::string("-o ") + arg +
                    ": expected a number from 16 to 100000000 (0: half the file limit)";
      }
      return 0;
    }
    case kKeyEntryTimeout:
    case kKeyAttrTimeout:
    case kKeyNegativeTimeout: {
      double* target = key == kKeyEntryTimeout  ? &o.cache.entry_timeout
                       : key == kKeyAttrTimeout ? &o.cache.attr_timeout
                                                : &o.cache.negative_timeout;
      if (!ParseSeconds(ValueOf(arg), target)) {
        st->error = std::string("-o ") + arg + ": expected a number of seconds >= 0";
      }
      return 0;
    }
    case kKeyWriteback:
      o.cache.writeback = true;
      return 0;
    case kKeyNoWriteback:
      o.cache.writeback = false;
      return 0;
    case kKeyKeepCache:
      o.cache.keep_cache = true;
      return 0;
    case kKeyNoKeepCache:
      o.cache.keep_cache = false;
      return 0;
    case kKeyKillprivV2:
      o.killpriv_v2 = true;
      return 0;
    case kKeyNoKillprivV2:
      o.killpriv_v2 = false;
      return 0;
    case kKeyPassthrough:
      o.passthrough = true;
      return 0;
    case kKeyNoPassthrough:
      o.passthrough = false;
      return 0;
    case kKeyUring:
      o.uring = true;
      return 0;
    case kKeyNoUring:
      o.uring = false;
      return 0;
    case kKeyUringEntries: {
      const std::string v = ValueOf(arg);
      char* end = nullptr;
      unsigned long n = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v[0] == '-' || n < 1 || n > 64) {
        st->error = std::string("-o ") + arg + ": expected a number from 1 to 64";
      } else {
        o.uring_entries = static_cast<unsigned>(n);
      }
      return 0;
    }
    case kKeyRemount:
      o.remount = true;
      return 0;
    case kKeyReadOnly:
      o.read_only = true;
      return 1;
    case kKeyReadWrite:
      o.read_only = false;
      return 1;
    case kKeyDefaultPermissions:
      o.default_permissions = true;
      return 1;
    case kKeyAllowOther:
      o.allow_other = true;
      return 1;
    case kKeyNonEmpty:
      o.nonempty = true;
      return 0;
    case FUSE_OPT_KEY_NONOPT:
      if (!st->have_source) {
        st->have_source = true;
        o.source = arg;
        return 0;
      }
      return 1;  // the mountpoint, for fuse_parse_cmdline
    default:
      return 1;
  }
}

// Escapes ',' and '\' so a source path can travel inside "-o fsname=...".
std::string EscapeOptionValue(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

Result<CommandLine> ParseCommandLine(int argc, char** argv) {
  CommandLine cl;
  ParseState st{&cl, {}, false};
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  std::unique_ptr<fuse_args, void (*)(fuse_args*)> guard(&args, fuse_opt_free_args);
  if (fuse_opt_parse(&args, &st, kOptionSpecs, ProcessArg) != 0) {
    return Status::InvalidArgument("cannot parse the command line");
  }
  if (cl.action != CommandLine::Action::kRun) return cl;
  if (!st.error.empty()) return Status::InvalidArgument(st.error);

  fuse_cmdline_opts copts{};
  if (fuse_parse_cmdline(&args, &copts) != 0) {
    return Status::InvalidArgument("bad arguments (see ktmfs --help)");
  }
  std::unique_ptr<char, void (*)(void*)> mp(copts.mountpoint, free);
  if (copts.show_help) {
    cl.action = CommandLine::Action::kHelp;
    return cl;
  }
  if (copts.show_version) {
    cl.action = CommandLine::Action::kVersion;
    return cl;
  }
  Options& o = cl.options;
  if (o.source.empty() || copts.mountpoint == nullptr) {
    return Status::InvalidArgument("expected SOURCE and MOUNTPOINT (see ktmfs --help)");
  }
  o.mountpoint = copts.mountpoint;
  o.foreground = copts.foreground != 0;
  o.debug = copts.debug != 0;
  o.single_thread = copts.singlethread != 0;
  o.clone_fd = copts.clone_fd != 0;
  o.max_idle_threads = copts.max_idle_threads;
  o.max_threads = copts.max_threads;

  bool has_fsname = false, has_subtype = false;
  for (int i = 0; i < args.argc; i++) {
    std::string a = args.argv[i];
    o.fuse_args.push_back(a);
    if (a.find("fsname=") != std::string::npos) has_fsname = true;
    if (a.find("subtype=") != std::string::npos) has_subtype = true;
  }
  if (o.fuse_args.empty()) o.fuse_args.push_back("ktmfs");
  // Transactions rely on the kernel checking permissions against the attributes each caller is
  // served (a transaction's own view included), so the mount always has default_permissions.
  if (!o.default_permissions) {
    o.default_permissions = true;
    o.fuse_args.push_back("-odefault_permissions");
  }
  if (const char* f = getenv("KTMFS_FAULT_LOG_SYNC"); f != nullptr && *f != '\0') {
    // A test that asked for a fault must not pass because the daemon cannot inject it.
    if (!KTMFS_FAULT_HOOKS)
      return Status::InvalidArgument(
          "KTMFS_FAULT_LOG_SYNC is set, but this ktmfs was built without -Dfault_hooks=true");
    o.fault_log_sync = f;
  }
  if (const char* f = getenv("KTMFS_FAULT_APPLY_PAUSE"); f != nullptr && *f != '\0') {
    if (!KTMFS_FAULT_HOOKS)
      return Status::InvalidArgument(
          "KTMFS_FAULT_APPLY_PAUSE is set, but this ktmfs was built without -Dfault_hooks=true");
    o.fault_apply_pause = f;
  }
  if (const char* f = getenv("KTMFS_FAULT_RELEASE_DELAY_MS"); f != nullptr && *f != '\0') {
    if (!KTMFS_FAULT_HOOKS)
      return Status::InvalidArgument(
          "KTMFS_FAULT_RELEASE_DELAY_MS is set, but this ktmfs was built without "
          "-Dfault_hooks=true");
    char* end = nullptr;
    const unsigned long ms = std::strtoul(f, &end, 10);
    if (*end != '\0' || ms > 60000)
      return Status::InvalidArgument(std::string("KTMFS_FAULT_RELEASE_DELAY_MS=") + f +
                                     ": not a number of milliseconds up to 60000");
    o.fault_release_delay_ms = static_cast<unsigned>(ms);
  }
  if (!has_fsname) o.fuse_args.push_back("-ofsname=" + EscapeOptionValue(o.source));
  if (!has_subtype) o.fuse_args.push_back("-osubtype=ktmfs");
  return cl;
}

void PrintUsage(const char* program) {
  std::printf(
      "usage: %s [-f] [-d] [-s] [-o OPTIONS] SOURCE MOUNTPOINT\n"
      "\n"
      "SOURCE is one directory (/srv/app) or several named ones\n"
      "(data=/srv/data:conf=/etc/app), shown as top-level entries of the mount.\n"
      "\n"
      "ktmfs options:\n"
      "    -o state=DIR             state directory (default: .ktmfs in the first source)\n"
      "    -o log=multiplexed|dedicated  one log for all sources, or one per source\n"
      "    -o log_size=SIZE         most space a new log may take (default 1G; K, M, G)\n"
      "    -o max_user_transactions=N  live transactions per user (default 128; 0: no\n"
      "                             cap; root is never capped)\n"
      "    -o max_user_memory=SIZE  daemon memory one user's live transactions may hold\n"
      "                             (default 256M; 0: no cap)\n"
      "    -o max_user_descriptors=N  descriptors one user's live transactions may keep\n"
      "                             open, one per existing file changed, at most 512\n"
      "                             per transaction where file handles work (default: a\n"
      "                             quarter of the daemon's file limit; 0: no cap)\n"
      "    -o node_descriptors=N    descriptors kept open for objects the kernel knows;\n"
      "                             others are opened again by handle (default 0: half\n"
      "                             the daemon's file limit)\n"
      "    -o entry_timeout=SECS    name cache timeout (default 0: see ktmfs(8))\n"
      "    -o attr_timeout=SECS     attribute cache timeout (default 86400)\n"
      "    -o negative_timeout=SECS negative lookup cache timeout (default 0)\n"
      "    -o writeback             enable the kernel's writeback cache (default off)\n"
      "    -o nowriteback           disable it\n"
      "    -o keep_cache            keep page cache across opens (default)\n"
      "    -o nokeep_cache          drop page cache on every open\n"
      "    -o killpriv_v2           take the kernel's HANDLE_KILLPRIV_V2 offer: the\n"
      "                             daemon clears set-id bits on write, and the kernel\n"
      "                             stops asking for security.capability before each\n"
      "                             write (default)\n"
      "    -o nokillpriv_v2         decline it\n"
      "    -o passthrough           take the kernel's PASSTHROUGH offer (root only): files\n"
      "                             open outside transactions are read and written by\n"
      "                             the kernel on the backing file (default; not with\n"
      "                             -o writeback)\n"
      "    -o nopassthrough         decline it\n"
      "    -o uring                 take the kernel's OVER_IO_URING offer: requests and\n"
      "                             replies travel through io_uring entries, one queue\n"
      "                             per CPU (default; the kernel offers it once root\n"
      "                             sets /sys/module/fuse/parameters/enable_uring)\n"
      "    -o nouring               decline it\n"
      "    -o uring_entries=N       entries, each with its thread, per CPU queue\n"
      "                             (default 4)\n"
      "    -o nonempty              mount over a non-empty directory without a warning\n"
      "    -o remount,ro|rw         remount the live mount on MOUNTPOINT read-only or\n"
      "                             read-write (what mount -o remount runs) and exit\n"
      "\n"
      "The mount always has default_permissions: the kernel checks access against the\n"
      "attributes each caller sees, a transaction's own changes included.\n"
      "\n",
      program);
}

}  // namespace ktmfs::fs

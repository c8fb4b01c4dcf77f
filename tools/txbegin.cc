// txbegin: begins a transaction on a ktmfs mount, bound by default to the calling shell's
// process tree, and prints its id. See txbegin(1).
#include <getopt.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tools/tool_common.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "Usage: txbegin [-s thread|process|tree] [-p PID] [-t SECONDS] [-n DESCRIPTION] "
               "[PATH]\n"
               "Begin a transaction on the ktmfs mount holding PATH (default: the current\n"
               "directory) and print its id. By default the calling shell and every process it\n"
               "starts afterwards are inside the transaction until txcommit or txrollback.\n"
               "\n"
               "  -s, --scope=SCOPE        thread, process or tree (default: tree)\n"
               "  -p, --pid=PID            the process to bind (default: the calling shell)\n"
               "  -t, --timeout=SECONDS    roll back if not ended within SECONDS\n"
               "  -n, --name=DESCRIPTION   a description shown by txstat\n"
               "  -q, --quiet              do not print the id\n"
               "      --help               show this help and exit\n"
               "      --version            show the version and exit\n"
               "\n"
               "Exit status: 0 begun, 1 refused or failed, 2 usage error, 4 not a ktmfs mount.\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ktmfs::tools;
  SetProgramName(argv[0]);
  argv[0] = const_cast<char*>(ProgramName());  // getopt names the tool, not its path
  static const option kOptions[] = {{"scope", required_argument, nullptr, 's'},
                                    {"pid", required_argument, nullptr, 'p'},
                                    {"timeout", required_argument, nullptr, 't'},
                                    {"name", required_argument, nullptr, 'n'},
                                    {"quiet", no_argument, nullptr, 'q'},
                                    {"help", no_argument, nullptr, kHelpOption},
                                    {"version", no_argument, nullptr, kVersionOption},
                                    {nullptr, 0, nullptr, 0}};

  ktmfs_scope scope = KTMFS_SCOPE_TREE;
  pid_t pid = getppid();
  uint32_t timeout = 0;
  std::string name;
  bool quiet = false;
  int c;
  while ((c = getopt_long(argc, argv, "s:p:t:n:q", kOptions, nullptr)) != -1) {
    unsigned long v;
    switch (c) {
      case 's':
        if (!std::strcmp(optarg, "thread")) {
          scope = KTMFS_SCOPE_THREAD;
        } else if (!std::strcmp(optarg, "process")) {
          scope = KTMFS_SCOPE_PROCESS;
        } else if (!std::strcmp(optarg, "tree")) {
          scope = KTMFS_SCOPE_TREE;
        } else {
          Warn("invalid scope '%s' (expected thread, process or tree)", optarg);
          return KTMFS_EXIT_USAGE;
        }
        break;
      case 'p':
        if (!ParseUnsigned(optarg, INT_MAX, &v) || v == 0) {
          Warn("invalid process id '%s'", optarg);
          return KTMFS_EXIT_USAGE;
        }
        pid = static_cast<pid_t>(v);
        break;
      case 't':
        if (!TimeoutOption(optarg, &timeout)) return KTMFS_EXIT_USAGE;
        break;
      case 'n':
        if (!NameOption(optarg, &name)) return KTMFS_EXIT_USAGE;
        break;
      case 'q':
        quiet = true;
        break;
      default:
        return EndOptions(c, Usage, KTMFS_EXIT_USAGE);
    }
  }
  if (argc - optind > 1) {
    Warn("too many arguments");
    Usage(stderr);
    return KTMFS_EXIT_USAGE;
  }
  std::string path = optind < argc ? argv[optind] : ".";

  int code;
  int fd = OpenMount(path, &code);
  if (fd < 0) return code;
  char id[KTMFS_ID_SIZE];
  int rc = ktmfs_begin(fd, scope, pid, timeout, name.c_str(), id);
  if (rc != 0) {
    // The daemon's sentence, once (asking consumes it).
    const std::string reason = DaemonReason(fd);
    close(fd);
    if (!reason.empty()) {
      Warn("%s: begin: %s", path.c_str(), reason.c_str());
      return rc == -ENODATA ? KTMFS_EXIT_NO_TX : KTMFS_EXIT_FAILED;
    }
    if (rc == -EPERM) {
      // The daemon refuses a binding the kernel would refuse a ptrace: say what can be bound.
      Warn(
          "%s: begin: permission denied: this user may not bind the process (only one it could "
          "ptrace: of the same user and groups, not running set-id, dumpable)",
          path.c_str());
      return KTMFS_EXIT_FAILED;
    }
    return ReportError(-1, path, "begin", rc);
  }
  close(fd);
  if (!quiet) std::printf("%s\n", id);
  return KTMFS_EXIT_OK;
}

// txcommit and txrollback: one program, two names. Ends the transaction bound to the calling
// shell (or the one given with --id). See txcommit(1), txrollback(1).
#include <getopt.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "tools/held_signals.h"
#include "tools/tool_common.h"

namespace {

void Usage(FILE* out, bool commit) {
  const char* prog = commit ? "txcommit" : "txrollback";
  std::fprintf(out,
               "Usage: %s [-i ID] [PATH]\n"
               "%s the transaction bound to the calling process on the ktmfs mount holding\n"
               "PATH (default: the current directory)%s.\n"
               "Once asked, it goes on whatever becomes of %s: SIGINT, SIGQUIT, SIGTERM\n"
               "and SIGHUP wait until its outcome is said.\n"
               "\n"
               "  -i, --id=ID     end transaction ID instead (you must own it, or be root)\n"
               "      --help      show this help and exit\n"
               "      --version   show the version and exit\n"
               "\n"
               "Exit status: 0 %s, 1 failed%s, 2 usage error, 3 no transaction bound,\n"
               "4 not a ktmfs mount.\n",
               prog, commit ? "Commit" : "Roll back",
               commit ? "; returns once the transaction is durable" : "", prog,
               commit ? "committed" : "rolled back",
               commit ? " (a failed commit is rolled back, or its outcome is unknown until\n"
                        "the next mount)"
                      : "");
}

// The exit code for the end's result, after saying why it failed.
int Report(int fd, const std::string& path, bool commit, int rc) {
  if (rc == 0) return KTMFS_EXIT_OK;
  if (commit && rc == -KTMFS_EOUTCOME_UNKNOWN) {
    const std::string reason = ktmfs::tools::DaemonReason(fd);
    ktmfs::tools::Warn(
        "%s: the outcome of the commit is unknown until the next mount recovers the log (its "
        "decision could not be made durable%s%s)",
        path.c_str(), reason.empty() ? "" : ": ", reason.c_str());
    return KTMFS_EXIT_FAILED;
  }
  if (std::string gone = ktmfs::tools::OutcomeWhenDaemonGone(rc, commit); !gone.empty()) {
    ktmfs::tools::Warn("%s: %s", path.c_str(), gone.c_str());
    return KTMFS_EXIT_FAILED;
  }
  if (commit && (rc == -EIO || rc == -ENOSPC || rc == -ETIMEDOUT)) {
    const std::string reason = ktmfs::tools::DaemonReason(fd);
    ktmfs::tools::Warn("%s: commit failed: %s; the transaction was rolled back", path.c_str(),
                       reason.empty() ? std::strerror(-rc) : reason.c_str());
    return KTMFS_EXIT_FAILED;
  }
  return ktmfs::tools::ReportError(fd, path, commit ? "commit" : "rollback", rc);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ktmfs::tools;
  SetProgramName(argv[0]);
  argv[0] = const_cast<char*>(ProgramName());  // getopt names the tool, not its path
  const bool commit = std::strcmp(ProgramName(), "txrollback") != 0;
  static const option kOptions[] = {{"id", required_argument, nullptr, 'i'},
                                    {"help", no_argument, nullptr, kHelpOption},
                                    {"version", no_argument, nullptr, kVersionOption},
                                    {nullptr, 0, nullptr, 0}};
  std::string id;
  int c;
  while ((c = getopt_long(argc, argv, "i:", kOptions, nullptr)) != -1) {
    switch (c) {
      case 'i':
        if (std::strlen(optarg) != KTMFS_ID_LEN) {
          Warn("invalid transaction id '%s'", optarg);
          return KTMFS_EXIT_USAGE;
        }
        id = optarg;
        break;
      default:
        return EndOptions(
            c, [commit](FILE* out) { Usage(out, commit); }, KTMFS_EXIT_USAGE);
    }
  }
  if (argc - optind > 1) {
    Warn("too many arguments");
    Usage(stderr, commit);
    return KTMFS_EXIT_USAGE;
  }
  std::string path = optind < argc ? argv[optind] : ".";

  int code;
  int fd = OpenMount(path, &code);
  if (fd < 0) return code;
  uint32_t flags = 0;
  HeldSignals held;
  int rc = commit ? ktmfs_commit_flags(fd, id.c_str(), &flags) : ktmfs_rollback(fd, id.c_str());
  const int result = Report(fd, path, commit, rc);
  // Committed: exit status 0 whatever apply did, so that a script does not do its work again.
  if (rc == 0 && (flags & KTMFS_TXF_APPLY_PENDING)) ktmfs::tools::WarnApplyPending(fd, path);
  close(fd);
  SayHeldSignal(held, path, commit ? "commit" : "rollback",
                rc == 0 ? (commit ? "committed" : "rolled back") : nullptr);
  return result;
}

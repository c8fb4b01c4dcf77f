// txrun: runs a command inside a new transaction; commits if it exits 0, rolls back otherwise.
// See txrun(1).
//
// txrun binds the transaction to its own process tree before starting the command, so the
// command and everything it starts are inside, and txrun is still alive (and bound) to commit
// once the command has exited: binding the command's pid instead would roll the transaction
// back the moment the command exits.
#include <getopt.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tools/held_signals.h"
#include "tools/tool_common.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "Usage: txrun [-t SECONDS] [-n DESCRIPTION] [PATH] -- COMMAND [ARGS...]\n"
               "Run COMMAND inside a new transaction on the ktmfs mount holding PATH (default:\n"
               "the current directory). Commit if COMMAND exits with status 0, else roll back.\n"
               "\n"
               "  -t, --timeout=SECONDS    roll back if not committed within SECONDS\n"
               "  -n, --name=DESCRIPTION   a description shown by txstat\n"
               "      --help               show this help and exit\n"
               "      --version            show the version and exit\n"
               "\n"
               "Exit status: COMMAND's (128+N if it was killed by signal N), except: 121 usage\n"
               "error; 122 PATH not on a ktmfs mount; 123 COMMAND succeeded but the commit\n"
               "failed; 125 the transaction could not be begun; 126 COMMAND could not be run;\n"
               "127 COMMAND was not found.\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ktmfs::tools;
  SetProgramName(argv[0]);
  argv[0] = const_cast<char*>(ProgramName());  // getopt names the tool, not its path
  static const option kOptions[] = {{"timeout", required_argument, nullptr, 't'},
                                    {"name", required_argument, nullptr, 'n'},
                                    {"help", no_argument, nullptr, kHelpOption},
                                    {"version", no_argument, nullptr, kVersionOption},
                                    {nullptr, 0, nullptr, 0}};
  uint32_t timeout = 0;
  std::string name;
  int c;
  // '+': stop at the first non-option, so COMMAND's own options are left alone.
  while ((c = getopt_long(argc, argv, "+t:n:", kOptions, nullptr)) != -1) {
    switch (c) {
      case 't':
        if (!TimeoutOption(optarg, &timeout)) return KTMFS_EXIT_TXRUN_USAGE;
        break;
      case 'n':
        if (!NameOption(optarg, &name)) return KTMFS_EXIT_TXRUN_USAGE;
        break;
      default:
        return EndOptions(c, Usage, KTMFS_EXIT_TXRUN_USAGE);
    }
  }
  std::string path = ".";
  if (optind > 0 && std::strcmp(argv[optind - 1], "--") == 0) {
    // "txrun -- COMMAND": getopt consumed the separator.
  } else if (optind + 1 < argc && std::strcmp(argv[optind + 1], "--") == 0) {
    path = argv[optind];
    optind += 2;
  } else {
    Warn("expected [PATH] -- COMMAND");
    Usage(stderr);
    return KTMFS_EXIT_TXRUN_USAGE;
  }
  if (optind >= argc) {
    Warn("no command given");
    Usage(stderr);
    return KTMFS_EXIT_TXRUN_USAGE;
  }
  char** command = argv + optind;

  int code;
  int fd = OpenMount(path, &code);
  if (fd < 0)
    return code == KTMFS_EXIT_NOT_KTMFS ? KTMFS_EXIT_TXRUN_NOT_KTMFS : KTMFS_EXIT_TXRUN_FAILED;
  char id[KTMFS_ID_SIZE];
  int rc = ktmfs_begin(fd, KTMFS_SCOPE_TREE, 0, timeout, name.c_str(), id);
  if (rc != 0) {
    ReportError(fd, path, "begin", rc);
    close(fd);
    return KTMFS_EXIT_TXRUN_FAILED;
  }

  // Like a shell running a foreground job: the terminal's signals are for the command; txrun
  // stays to roll back after it.
  struct sigaction ignore = {}, old_int = {}, old_quit = {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);

  pid_t child = fork();
  if (child == 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGQUIT, &old_quit, nullptr);
    // The working directory was looked up before the transaction began: it is the committed
    // directory's node, which everyone shares, and an outsider's inotify watch on it would
    // report the command's uncommitted names. Looked up again from inside the transaction it
    // is the transaction's own. If that fails, the command runs where it was anyway.
    if (char* cwd = getcwd(nullptr, 0)) {
      if (chdir(cwd) != 0)
        Warn("re-entering %s inside the transaction: %s", cwd, std::strerror(errno));
      free(cwd);
    }
    execvp(command[0], command);
    int err = errno;
    Warn("%s: %s", command[0], std::strerror(err));
    _exit(err == ENOENT ? 127 : 126);
  }
  if (child < 0) {
    Warn("fork: %s", std::strerror(errno));
    ktmfs_rollback(fd, id);
    close(fd);
    return KTMFS_EXIT_TXRUN_FAILED;
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

  const bool commit = result == 0;
  HeldSignals held;
  if (commit) {
    uint32_t flags = 0;
    rc = ktmfs_commit_flags(fd, id, &flags);
    if (rc == 0 && (flags & KTMFS_TXF_APPLY_PENDING)) {
      WarnApplyPending(fd, path);
    } else if (rc == -KTMFS_EOUTCOME_UNKNOWN) {
      Warn(
          "%s: the outcome of the commit of %s is unknown until the next mount recovers the "
          "log (its decision could not be made durable)",
          path.c_str(), id);
      result = KTMFS_EXIT_COMMIT_FAILED;
    } else if (std::string gone = OutcomeWhenDaemonGone(rc, true); !gone.empty()) {
      Warn("%s: commit of %s: %s", path.c_str(), id, gone.c_str());
      result = KTMFS_EXIT_COMMIT_FAILED;
    } else if (rc != 0) {
      Warn("%s: commit of %s failed: %s; the transaction was rolled back", path.c_str(), id,
           std::strerror(-rc));
      result = KTMFS_EXIT_COMMIT_FAILED;
    }
  } else {
    rc = ktmfs_rollback(fd, id);
    // The transaction may already be gone (its timeout expired): that is still a rollback.
    if (std::string gone = OutcomeWhenDaemonGone(rc, false); !gone.empty()) {
      Warn("%s: rollback of %s: %s", path.c_str(), id, gone.c_str());
    } else if (rc != 0 && rc != -ENOENT && rc != -ENODATA) {
      Warn("%s: rollback of %s failed: %s", path.c_str(), id, std::strerror(-rc));
    }
  }
  close(fd);
  const bool ended = rc == 0 || (!commit && (rc == -ENOENT || rc == -ENODATA));
  SayHeldSignal(held, path, commit ? "commit" : "rollback",
                ended ? (commit ? "committed" : "rolled back") : nullptr);
  return result;
}

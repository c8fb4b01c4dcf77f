#include "tools/tool_common.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ktmfs_config.h"

namespace ktmfs::tools {
namespace {
const char* g_program = "ktmfs";
}

void SetProgramName(const char* argv0) {
  const char* slash = std::strrchr(argv0, '/');
  g_program = slash ? slash + 1 : argv0;
}

const char* ProgramName() {
  return g_program;
}

void Warn(const char* fmt, ...) {
  std::fprintf(stderr, "%s: ", g_program);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

int OpenMount(const std::string& path, int* exit_code) {
  // O_RDONLY works for files and directories alike and is all FUSE needs to pass an ioctl on.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    Warn("%s: %s", path.c_str(), std::strerror(errno));
    *exit_code = KTMFS_EXIT_FAILED;
    return -1;
  }
  int rc = ktmfs_hello(fd, nullptr);
  if (rc != 0) {
    if (rc == -ENOTTY)
      Warn("%s: not on a ktmfs mount", path.c_str());
    else
      Warn("%s: cannot talk to ktmfs: %s", path.c_str(), std::strerror(-rc));
    close(fd);
    *exit_code = rc == -ENOTTY ? KTMFS_EXIT_NOT_KTMFS : KTMFS_EXIT_FAILED;
    return -1;
  }
  return fd;
}

std::string DaemonReason(int fd) {
  char text[KTMFS_REASON_SIZE];
  if (fd < 0 || ktmfs_reason(fd, text, sizeof text) != 0) return {};
  return text;
}

void WarnApplyPending(int fd, const std::string& path) {
  std::string reason = DaemonReason(fd);
  if (reason.empty()) reason = "the transaction is committed, but applying it failed";
  Warn(
      "%s: %s; not all of its changes are visible yet: the daemon retries every few seconds "
      "and at every mount (txstat lists it as apply-pending meanwhile)",
      path.c_str(), reason.c_str());
}

std::string OutcomeWhenDaemonGone(int neg_errno, bool commit) {
  if (neg_errno == -ECONNABORTED && commit)
    return "the daemon serving the mount stopped during the commit: its outcome is unknown "
           "until the next mount recovers the log";
  if (neg_errno == -ECONNABORTED || neg_errno == -ENOTCONN)
    return std::string("the daemon serving the mount ") +
           (neg_errno == -ENOTCONN ? "had stopped before" : "stopped during") + " the " +
           (commit ? "commit" : "rollback") + ": the next mount rolls the transaction back";
  return "";
}

int ReportError(int fd, const std::string& path, const char* what, int neg_errno) {
  int err = -neg_errno;
  const std::string reason = err == ENOTTY ? std::string() : DaemonReason(fd);
  if (!reason.empty()) {
    Warn("%s: %s: %s", path.c_str(), what, reason.c_str());
    return err == ENODATA ? KTMFS_EXIT_NO_TX : KTMFS_EXIT_FAILED;
  }
  switch (err) {
    case ENODATA:
      Warn("%s: %s: no transaction is bound to this process", path.c_str(), what);
      return KTMFS_EXIT_NO_TX;
    case ENOTTY:
      Warn("%s: not on a ktmfs mount", path.c_str());
      return KTMFS_EXIT_NOT_KTMFS;
    case EPERM:
    case EACCES:
      Warn("%s: %s: permission denied (the transaction or process belongs to another user)",
           path.c_str(), what);
      return KTMFS_EXIT_FAILED;
    case EBUSY:
      Warn("%s: %s: conflict: %s", path.c_str(), what,
           "the process is already bound to a transaction, or an object is held by another");
      return KTMFS_EXIT_FAILED;
    case ESRCH:
      Warn("%s: %s: no such process", path.c_str(), what);
      return KTMFS_EXIT_FAILED;
    case ENOENT:
      Warn("%s: %s: no such transaction", path.c_str(), what);
      return KTMFS_EXIT_FAILED;
    default:
      Warn("%s: %s failed: %s", path.c_str(), what, std::strerror(err));
      return KTMFS_EXIT_FAILED;
  }
}

void PrintVersion() {
  std::printf("%s (ktmfs) %s\n", g_program, KTMFS_VERSION);
}

int EndOptions(int c, const std::function<void(FILE*)>& usage, int usage_exit) {
  switch (c) {
    case kHelpOption:
      usage(stdout);
      return KTMFS_EXIT_OK;
    case kVersionOption:
      PrintVersion();
      return KTMFS_EXIT_OK;
    default:
      usage(stderr);
      return usage_exit;
  }
}

bool ParseUnsigned(const char* text, unsigned long max, unsigned long* out) {
  if (!*text || *text == '-' || *text == '+') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(text, &end, 10);
  if (errno || *end || v > max) return false;
  *out = v;
  return true;
}

bool TimeoutOption(const char* text, uint32_t* seconds) {
  unsigned long v;
  if (!ParseUnsigned(text, UINT32_MAX, &v) || v == 0) {
    Warn("invalid timeout '%s' (expected a positive number of seconds)", text);
    return false;
  }
  *seconds = static_cast<uint32_t>(v);
  return true;
}

bool NameOption(const char* text, std::string* name) {
  if (std::strlen(text) >= KTMFS_NAME_SIZE) {
    Warn("description too long (at most %d bytes)", KTMFS_NAME_SIZE - 1);
    return false;
  }
  *name = text;
  return true;
}

}  // namespace ktmfs::tools

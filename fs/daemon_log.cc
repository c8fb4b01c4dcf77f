#include "fs/daemon_log.h"

#include <fuse_log.h>
#include <syslog.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace ktmfs::fs {

namespace {

std::atomic<bool> to_syslog{false};
std::atomic<bool> to_stderr{true};
std::mutex stderr_mu;  // one message per line, whichever thread writes

int Priority(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return LOG_ERR;
    case LogLevel::kWarning:
      return LOG_WARNING;
    case LogLevel::kNotice:
      return LOG_NOTICE;
    case LogLevel::kInfo:
      return LOG_INFO;
  }
  return LOG_NOTICE;
}

LogLevel FromFuse(fuse_log_level level) {
  if (level <= FUSE_LOG_ERR) return LogLevel::kError;
  if (level == FUSE_LOG_WARNING) return LogLevel::kWarning;
  if (level == FUSE_LOG_NOTICE) return LogLevel::kNotice;
  return LogLevel::kInfo;
}

void FromLibfuse(fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string message = buf;
  while (!message.empty() && message.back() == '\n')
    message.pop_back();
  syslog(Priority(FromFuse(level)), "%s", message.c_str());
}

}  // namespace

void DaemonLog(LogLevel level, const std::string& message) {
  if (to_syslog.load()) syslog(Priority(level), "%s", message.c_str());
  if (to_stderr.load()) {
    std::lock_guard l(stderr_mu);
    std::fprintf(stderr, "ktmfs: %s\n", message.c_str());
  }
}

void DaemonLogToSyslog(bool keep_stderr) {
  if (!to_syslog.exchange(true)) {
    openlog("ktmfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    fuse_set_log_func(FromLibfuse);
  }
  to_stderr.store(keep_stderr);
}

}  // namespace ktmfs::fs

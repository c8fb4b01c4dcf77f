#include "fs/mount/daemon_log.h"

#include <syslog.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <utility>

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

}  // namespace

void DaemonLog(LogLevel level, const std::string& message) {
  if (to_syslog.load()) syslog(Priority(level), "%s", message.c_str());
  if (to_stderr.load()) {
    std::lock_guard l(stderr_mu);
    std::fprintf(stderr, "ktmfs: %s\n", message.c_str());
  }
}

bool DaemonLogUsesSyslog() {
  return to_syslog.load();
}

void DaemonLogToSyslog(bool keep_stderr) {
  if (!to_syslog.exchange(true)) {
    openlog("ktmfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  }
  to_stderr.store(keep_stderr);
}

std::string QuotedForLog(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::optional<uint64_t> LogThrottle::Take(std::chrono::steady_clock::time_point now) {
  std::lock_guard l(mu_);
  if (last_ && now - *last_ < every_) {
    held_++;
    return std::nullopt;
  }
  last_ = now;
  return std::exchange(held_, 0);
}

}  // namespace ktmfs::fs

// Where the daemon's words go. In the foreground (-f) every message goes to standard error;
// a daemon in the background (through mount(8) or fstab it always is) logs to syslog(3), under
// the name "ktmfs" with the daemon's pid, where the journal keeps them: recovery, rollbacks
// nobody asked for, apply failures. Until it has mounted, stderr gets them too (the mount
// command is waiting to say why it failed); once detached, syslog alone. The daemon points
// libfuse's own messages here too (main.cc); this file needs no FUSE.
//
// Library code (log/, src/, fs/tx/) never prints: it returns Status, or reports events through
// a callback the daemon points here.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace ktmfs::fs {

enum class LogLevel { kError, kWarning, kNotice, kInfo };

// "ktmfs: <message>" on stderr, or the message at `level` in syslog.
void DaemonLog(LogLevel level, const std::string& message);

// From now on messages go to syslog; to stderr as well while `keep_stderr` (a daemon in the
// background that has not mounted yet: whoever mounts still waits to hear why it fails).
void DaemonLogToSyslog(bool keep_stderr);
// Whether messages go to syslog now.
bool DaemonLogUsesSyslog();

// For a message users' requests can cause again and again (a write past the user's share of
// a full filesystem): lets it through once per `every`, so the log stays readable, and says how
// many were held back meanwhile.
class LogThrottle {
 public:
  explicit LogThrottle(std::chrono::steady_clock::duration every) : every_(every) {}
  // Whether to log now (with how many were held back since the last one logged), or not.
  std::optional<uint64_t> Take(
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

 private:
  const std::chrono::steady_clock::duration every_;
  std::mutex mu_;
  std::optional<std::chrono::steady_clock::time_point> last_;
  uint64_t held_ = 0;
};

// A user's text (a transaction's description) for a log line: in double quotes, with control
// bytes, quotes and backslashes as \xNN, so that no description can forge or break a line.
std::string QuotedForLog(const std::string& text);

}  // namespace ktmfs::fs

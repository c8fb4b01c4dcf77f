// The daemon's own sentence for a control request that failed. An errno says little ("no such
// transaction", when the daemon knows the transaction was rolled back by its timeout a minute
// ago), so the daemon keeps the message of each caller's last failure for a short while, and the
// tools ask for it (KTMFS_IOC_REASON) to print it instead of guessing from the errno.
//
// Kept per calling thread id and uid: the tools ask right after the failure, from the same
// thread. Bounded, and old entries expire, so a pid reused later does not inherit a message.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace ktmfs::fs {

class FailureReasons {
 public:
  static constexpr size_t kMaxEntries = 1024;
  static constexpr std::chrono::seconds kLifetime{60};

  void Remember(pid_t pid, uid_t uid, std::string message);
  // The message for (pid, uid), removed; empty if there is none (or it expired).
  std::string Take(pid_t pid, uid_t uid);

  // For tests: a clock of their own.
  using Clock = std::chrono::steady_clock;
  void SetNowForTesting(Clock::time_point now) { fake_now_ = now; }

 private:
  struct Entry {
    uid_t uid;
    std::string message;
    Clock::time_point when;
  };
  Clock::time_point Now() const { return fake_now_ ? *fake_now_ : Clock::now(); }

  std::mutex mu_;
  std::map<pid_t, Entry> entries_;
  std::optional<Clock::time_point> fake_now_;
};

}  // namespace ktmfs::fs

#include "log/wake_word.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>

namespace ktmfs::log {
namespace {

long Futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* timeout,
           uint32_t mask) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op | FUTEX_PRIVATE_FLAG, val,
                   timeout, nullptr, mask);
}

}  // namespace

void WakeWord::Wait(uint32_t seen) {
  Futex(&word_, FUTEX_WAIT_BITSET, seen, nullptr, FUTEX_BITSET_MATCH_ANY);
}

// FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, which is steady_clock's on Linux.
void WakeWord::WaitUntil(uint32_t seen, std::chrono::steady_clock::time_point deadline) {
  const auto since = deadline.time_since_epoch();
  if (since.count() <= 0) return;
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  timespec ts{};
  ts.tv_sec = time_t(secs.count());
  ts.tv_nsec = long(std::chrono::duration_cast<std::chrono::nanoseconds>(since - secs).count());
  Futex(&word_, FUTEX_WAIT_BITSET, seen, &ts, FUTEX_BITSET_MATCH_ANY);
}

void WakeWord::WakeAll() { Futex(&word_, FUTEX_WAKE, INT_MAX, nullptr, 0); }

}  // namespace ktmfs::log

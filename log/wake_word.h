// A 32-bit word that threads sleep on until it changes, all of them released by one system call
// (futex(2)). Group commit releases a whole group with it: waking committers one by one cost a
// system call each, and on few cores each often preempted the waker, so the last of sixteen
// committers ran about 100 us after its record was durable (measured with tests/bench/log_bench).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ktmfs::log {

class WakeWord {
 public:
  uint32_t value() const { return word_.load(std::memory_order_acquire); }
  // Sleeps while the word holds `seen` (until `deadline`, for WaitUntil). May return early, so
  // callers check their condition again.
  void Wait(uint32_t seen);
  void WaitUntil(uint32_t seen, std::chrono::steady_clock::time_point deadline);
  // Changes the word under the caller's lock; WakeAll (which may follow after the lock is
  // released) then releases every thread sleeping on an earlier value.
  void Bump() { word_.fetch_add(1, std::memory_order_release); }
  void WakeAll();

 private:
  std::atomic<uint32_t> word_{0};
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
};

}  // namespace ktmfs::log

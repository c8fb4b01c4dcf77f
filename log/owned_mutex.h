// A mutex that knows, in debug builds, which thread holds it, so that code written to run with it
// held (the *Locked functions) can assert so. std::mutex cannot say. Built with NDEBUG (asserts
// off) it is a std::mutex and nothing more.
//
// It is a Lockable: std::lock_guard and std::unique_lock take it, and a
// std::condition_variable_any waits on it.
#pragma once

#include <atomic>
#include <cassert>
#include <mutex>
#include <thread>

namespace ktmfs {

class OwnedMutex {
 public:
  void lock() {
    mu_.lock();
    Own();
  }
  bool try_lock() {
    if (!mu_.try_lock()) return false;
    Own();
    return true;
  }
  void unlock() {
#ifndef NDEBUG
    assert(HeldHere() && "unlocked by a thread that does not hold it");
    owner_.store(std::thread::id(), std::memory_order_relaxed);
#endif
    mu_.unlock();
  }
  // Debug builds: aborts unless the calling thread holds the mutex.
  void AssertHeld() const {
    assert(HeldHere() && "the calling thread must hold this mutex");
  }

 private:
  void Own() {
#ifndef NDEBUG
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
#endif
  }
#ifndef NDEBUG
  // Relaxed is enough: only the holder compares equal to itself, and it wrote the value.
  bool HeldHere() const {
    return owner_.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
  std::atomic<std::thread::id> owner_{};
#endif
  std::mutex mu_;
};

}  // namespace ktmfs

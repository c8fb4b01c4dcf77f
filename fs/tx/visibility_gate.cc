#include "fs/tx/visibility_gate.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace ktmfs::fstx {

VisibilityGate::Pass& VisibilityGate::Pass::operator=(Pass&& o) noexcept {
  if (this != &o) {
    Release();
    gate_ = std::exchange(o.gate_, nullptr);
    applies_seen_ = o.applies_seen_;
    apply_was_running_ = o.apply_was_running_;
    keys_ = std::move(o.keys_);
    o.keys_.clear();
  }
  return *this;
}

bool VisibilityGate::Pass::Add(Key key) {
  assert(gate_ != nullptr);
  std::lock_guard l(gate_->mu_);
  if (gate_->closed_.contains(key)) return false;
  gate_->readers_[key]++;
  keys_.push_back(key);
  return true;
}

bool VisibilityGate::Pass::ApplyOverlapped() const {
  if (gate_ == nullptr) return false;
  std::lock_guard l(gate_->mu_);
  return apply_was_running_ || gate_->applies_begun_ != applies_seen_;
}

void VisibilityGate::Pass::Release() {
  if (gate_ == nullptr) return;
  {
    std::lock_guard l(gate_->mu_);
    gate_->ReleaseLocked(keys_);
  }
  gate_ = nullptr;
}

void VisibilityGate::ReleaseLocked(std::vector<Key>& keys) {
  bool wake = false;
  for (const Key& k : keys) {
    auto it = readers_.find(k);
    assert(it != readers_.end() && it->second > 0);
    if (--it->second == 0) {
      readers_.erase(it);
      // Only an apply waiting for this object's readers cares.
      wake = wake || closed_.contains(k);
    }
  }
  keys.clear();
  if (wake) changed_.notify_all();
}

VisibilityGate::Closed& VisibilityGate::Closed::operator=(Closed&& o) noexcept {
  if (this != &o) {
    Open();
    gate_ = std::exchange(o.gate_, nullptr);
    keys_ = std::move(o.keys_);
    o.keys_.clear();
  }
  return *this;
}

void VisibilityGate::Closed::Open() {
  if (gate_ == nullptr) return;
  {
    std::lock_guard l(gate_->mu_);
    for (const Key& k : keys_) {
      [[maybe_unused]] size_t erased = gate_->closed_.erase(k);
      assert(erased == 1);
    }
    assert(gate_->applies_running_ > 0);
    gate_->applies_running_--;
  }
  gate_->changed_.notify_all();
  keys_.clear();
  gate_ = nullptr;
}

VisibilityGate::~VisibilityGate() {
  assert(readers_.empty());
  assert(closed_.empty());
}

VisibilityGate::Pass VisibilityGate::Enter() {
  Pass p;
  p.gate_ = this;
  std::lock_guard l(mu_);
  p.applies_seen_ = applies_begun_;
  p.apply_was_running_ = applies_running_ > 0;
  return p;
}

VisibilityGate::Pass VisibilityGate::EnterFor(Key key) {
  for (;;) {
    Pass p = Enter();
    if (p.Add(key)) return p;
    p.Release();
    Await(key);
  }
}

void VisibilityGate::Await(Key key) {
  std::unique_lock l(mu_);
  changed_.wait(l, [&] { return !closed_.contains(key); });
}

VisibilityGate::Closed VisibilityGate::Close(std::vector<Key> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  if (keys.empty()) return Closed();
  std::unique_lock l(mu_);
  // Another apply with one of these objects closed goes first; closing only some of them
  // meanwhile could hold that apply's readers and this one's up against each other.
  changed_.wait(l, [&] {
    return std::none_of(keys.begin(), keys.end(),
                        [&](const Key& k) { return closed_.contains(k); });
  });
  closed_.insert(keys.begin(), keys.end());
  applies_begun_++;
  applies_running_++;
  changed_.wait(l, [&] {
    return std::none_of(keys.begin(), keys.end(),
                        [&](const Key& k) { return readers_.contains(k); });
  });
  Closed c;
  c.gate_ = this;
  c.keys_ = std::move(keys);
  return c;
}

size_t VisibilityGate::ReadersOf(Key key) const {
  std::lock_guard l(mu_);
  auto it = readers_.find(key);
  return it == readers_.end() ? 0 : it->second;
}

bool VisibilityGate::IsClosed(Key key) const {
  std::lock_guard l(mu_);
  return closed_.contains(key);
}

}  // namespace ktmfs::fstx

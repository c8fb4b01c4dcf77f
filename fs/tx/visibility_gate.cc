#include "fs/tx/visibility_gate.h"

#include <algorithm>
#include <cassert>
#include <set>
#include <utility>

namespace ktmfs::fstx {

VisibilityGate::Pass& VisibilityGate::Pass::operator=(Pass&& o) noexcept {
  if (this != &o) {
    Release();
    gate_ = std::exchange(o.gate_, nullptr);
    applies_seen_ = o.applies_seen_;
    opens_seen_ = o.opens_seen_;
    apply_was_running_ = o.apply_was_running_;
    keys_ = std::move(o.keys_);
    o.keys_.clear();
    served_ = std::move(o.served_);
    o.served_.clear();
  }
  return *this;
}

bool VisibilityGate::Pass::AddLocked(Key key, bool serve) {
  if (gate_->closed_.contains(key)) {
    if (!serve) return false;
    auto s = gate_->served_.find(key);
    if (s == gate_->served_.end()) return false;
    served_.emplace_back(key, s->second);
  }
  gate_->readers_[key]++;
  keys_.push_back(key);
  return true;
}

bool VisibilityGate::Pass::Add(Key key) {
  assert(gate_ != nullptr);
  std::lock_guard l(gate_->mu_);
  return AddLocked(key, false);
}

bool VisibilityGate::Pass::AddOrServe(Key key) {
  assert(gate_ != nullptr);
  std::lock_guard l(gate_->mu_);
  return AddLocked(key, true);
}

const ServedObject* VisibilityGate::Pass::ServedFrom(Key key) const {
  for (const auto& [k, object] : served_)
    if (k == key) return object.get();
  return nullptr;
}

bool VisibilityGate::Pass::Counts(Key key) const {
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

bool VisibilityGate::Pass::ApplyOverlapped() const {
  if (gate_ == nullptr) return false;
  std::lock_guard l(gate_->mu_);
  return apply_was_running_ || gate_->applies_begun_ != applies_seen_;
}

bool VisibilityGate::Pass::OpenedSince() const {
  if (gate_ == nullptr) return false;
  std::lock_guard l(gate_->mu_);
  return gate_->opens_ != opens_seen_;
}

void VisibilityGate::Pass::Release() {
  if (gate_ == nullptr) return;
  // Before the count: the hold that serves these waits for it, and then lets them go.
  served_.clear();
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
    serves_ = std::exchange(o.serves_, false);
  }
  return *this;
}

void VisibilityGate::Closed::Open() {
  if (gate_ == nullptr) return;
  {
    std::unique_lock l(gate_->mu_);
    if (serves_) {
      // No reader is served these from now on, and the ones being served finish before what
      // serves them goes (it reads the transaction's staging). Meanwhile the objects stay
      // closed, so every reader counted on them is one of those: none waits while counted.
      for (const Key& k : keys_)
        gate_->served_.erase(k);
      gate_->changed_.wait(l, [&] {
        return std::none_of(keys_.begin(), keys_.end(),
                            [&](const Key& k) { return gate_->readers_.contains(k); });
      });
      serves_ = false;
    }
    for (const Key& k : keys_) {
      [[maybe_unused]] size_t erased = gate_->closed_.erase(k);
      assert(erased == 1);
    }
    gate_->closed_count_.store(gate_->closed_.size(), std::memory_order_release);
    if (!keys_.empty()) gate_->opens_++;
    assert(gate_->applies_running_ > 0);
    gate_->applies_running_--;
  }
  gate_->changed_.notify_all();
  keys_.clear();
  gate_ = nullptr;
}

VisibilityGate::Closed VisibilityGate::Closed::Keep(const std::vector<Key>& keys,
                                                    ServedObjects served) {
  Closed kept;
  if (gate_ == nullptr) return kept;
  // A commit may keep thousands of files of its tens of thousands of objects, with the gate's
  // mutex held, which every reader's Enter takes: one pass over each, not one per kept key.
  const std::set<Key> wanted(keys.begin(), keys.end());
  std::lock_guard l(gate_->mu_);
  auto rest = std::stable_partition(keys_.begin(), keys_.end(),
                                    [&](const Key& k) { return !wanted.contains(k); });
  kept.keys_.assign(rest, keys_.end());
  keys_.erase(rest, keys_.end());
  for (const Key& k : kept.keys_) {
    auto s = served.find(k);
    if (s == served.end() || s->second == nullptr) continue;
    assert(!gate_->served_.contains(k));
    gate_->served_.emplace(k, std::move(s->second));
    kept.serves_ = true;
  }
  if (kept.keys_.empty()) return kept;
  kept.gate_ = gate_;
  // Each hold opens once, and counts as an apply running until it does.
  gate_->applies_running_++;
  // Readers waiting for these may be served now (AwaitOrServed).
  if (kept.serves_) gate_->changed_.notify_all();
  return kept;
}

VisibilityGate::~VisibilityGate() {
  assert(readers_.empty());
  assert(served_.empty());
  assert(closed_.empty());
}

VisibilityGate::Pass VisibilityGate::Enter() {
  Pass p;
  p.gate_ = this;
  std::lock_guard l(mu_);
  p.applies_seen_ = applies_begun_;
  p.opens_seen_ = opens_;
  p.apply_was_running_ = applies_running_ > 0;
  return p;
}

VisibilityGate::Pass VisibilityGate::EnterWith(Key key, bool serve) {
  for (;;) {
    Pass p = Enter();
    if (serve ? p.AddOrServe(key) : p.Add(key)) return p;
    p.Release();
    if (serve) {
      AwaitOrServed(key);
    } else {
      Await(key);
    }
  }
}

VisibilityGate::Pass VisibilityGate::EnterFor(Key key) {
  return EnterWith(key, false);
}

VisibilityGate::Pass VisibilityGate::EnterOrServe(Key key) {
  return EnterWith(key, true);
}

void VisibilityGate::Await(Key key) {
  std::unique_lock l(mu_);
  waiting_++;
  changed_.wait(l, [&] { return !closed_.contains(key); });
  waiting_--;
}

void VisibilityGate::AwaitOrServed(Key key) {
  std::unique_lock l(mu_);
  waiting_++;
  changed_.wait(l, [&] { return !closed_.contains(key) || served_.contains(key); });
  waiting_--;
}

size_t VisibilityGate::Waiting() const {
  std::lock_guard l(mu_);
  return waiting_;
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
  closed_count_.store(closed_.size(), std::memory_order_release);
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

bool VisibilityGate::IsServed(Key key) const {
  std::lock_guard l(mu_);
  return served_.contains(key);
}

}  // namespace ktmfs::fstx

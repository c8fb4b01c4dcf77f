#include "fs/fuse/invalidator.h"

namespace ktmfs::fs {

Invalidator::Invalidator(fuse_session* se) : se_(se), thread_([this] { Run(); }) {}

Invalidator::~Invalidator() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Invalidator::Discard(std::chrono::milliseconds most) {
  std::unique_lock l(mu_);
  discarded_ = true;
  sent_ += queue_.size();
  queue_.clear();
  done_cv_.notify_all();
  auto idle = [&] { return !sending_ && now_senders_ == 0; };
  if (most == std::chrono::milliseconds::max()) {
    done_cv_.wait(l, idle);
  } else {
    done_cv_.wait_for(l, most, idle);
  }
}

void Invalidator::Inode(fuse_ino_t node) {
  std::lock_guard l(mu_);
  if (discarded_) return;
  queue_.push_back({node, {}});
  queued_++;
  cv_.notify_one();
}

void Invalidator::Attributes(fuse_ino_t node) {
  std::lock_guard l(mu_);
  if (discarded_) return;
  queue_.push_back({node, {}, -1, 0});
  queued_++;
  cv_.notify_one();
}

void Invalidator::InodeNow(fuse_ino_t node) {
  SendNow(node, 0);
}

void Invalidator::AttributesNow(fuse_ino_t node) {
  SendNow(node, -1);  // a negative offset: the kernel leaves the pages alone
}

void Invalidator::SendNow(fuse_ino_t node, off_t off) {
  {
    std::lock_guard l(mu_);
    if (discarded_) return;
    now_senders_++;
  }
  (void)fuse_lowlevel_notify_inval_inode(se_, node, off, 0);
  std::lock_guard l(mu_);
  if (--now_senders_ == 0) done_cv_.notify_all();
}

bool Invalidator::PagesWithin(fuse_ino_t node, off_t off, off_t len,
                              std::chrono::milliseconds wait) {
  std::unique_lock l(mu_);
  if (discarded_) return false;
  queue_.push_back({node, {}, off, len});
  const uint64_t ticket = ++queued_;
  cv_.notify_one();
  return done_cv_.wait_for(l, wait, [&] { return sent_ >= ticket || stopping_ || discarded_; }) &&
         sent_ >= ticket;
}

void Invalidator::Entry(fuse_ino_t parent, const std::string& name) {
  std::lock_guard l(mu_);
  if (discarded_) return;
  queue_.push_back({parent, name});
  queued_++;
  cv_.notify_one();
}

void Invalidator::Drain() {
  std::unique_lock l(mu_);
  const uint64_t target = queued_;
  done_cv_.wait(l, [&] { return sent_ >= target || stopping_; });
}

void Invalidator::Run() {
  std::unique_lock l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) break;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    sending_ = true;
    l.unlock();
    // ENOENT only says the kernel no longer knows the node or name: nothing to drop.
    if (item.name.empty()) {
      (void)fuse_lowlevel_notify_inval_inode(se_, item.node, item.off, item.len);
    } else {
      (void)fuse_lowlevel_notify_inval_entry(se_, item.node, item.name.c_str(), item.name.size());
    }
    l.lock();
    sending_ = false;
    sent_++;
    done_cv_.notify_all();
  }
}

}  // namespace ktmfs::fs

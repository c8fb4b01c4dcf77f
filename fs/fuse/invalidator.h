// Tells the kernel to drop what it caches about nodes and entries, from a thread of its own:
// the kernel may hold locks of the very request that caused the change until it is answered,
// and an invalidation sent from inside that request would wait for them (libfuse's
// notify_inval_entry documents the deadlock).
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace ktmfs::fs {

class Invalidator {
 public:
  explicit Invalidator(fuse_session* se);
  ~Invalidator();

  void Inode(fuse_ino_t node);
  // Only the attributes (and cached ACLs) of `node`: its pages stay.
  void Attributes(fuse_ino_t node);
  // Sends at once, on the calling thread: safe only where the kernel holds no lock the
  // invalidation needs (attributes and pages need none of the inode locks).
  void InodeNow(fuse_ino_t node);
  // Only the attributes (and cached ACLs), at once on the calling thread: takes no lock in the
  // kernel, so safe from any request.
  void AttributesNow(fuse_ino_t node);
  // Drops the pages OFF..OFF+LEN of `node` (and its attributes) from the thread, and waits at
  // most `wait` for that to be done: true if it was. The wait is bounded because the kernel
  // may hold one of those pages locked until the caller's own request is answered.
  bool PagesWithin(fuse_ino_t node, off_t off, off_t len, std::chrono::milliseconds wait);
  void Entry(fuse_ino_t parent, const std::string& name);

  // Returns once everything queued before the call has been sent.
  void Drain();
  // Forgets what is queued and sends nothing more, once every send in progress (InodeNow's
  // included) is done: the filesystem is being unmounted, the kernel will hold nothing to drop,
  // and the session's descriptor is about to be closed (its number may then name another file).
  // `most` bounds the wait for a send in progress: one blocked on a page lock held by a request
  // nobody will answer now returns only once the descriptor is closed (the send is then inside
  // the kernel, which holds the file open for it).
  void Discard(std::chrono::milliseconds most = std::chrono::milliseconds::max());

 private:
  // Sends at once on the calling thread: off 0 drops the node's pages and attributes, a negative
  // off its attributes only.
  void SendNow(fuse_ino_t node, off_t off);
  struct Item {
    fuse_ino_t node;
    std::string name;  // empty: the node's attributes and pages
    off_t off = 0;     // with an empty name: the pages from `off`, `len` of them (0: all;
                       // none if `off` is negative)
    off_t len = 0;
  };
  void Run();

  fuse_session* se_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<Item> queue_;
  uint64_t queued_ = 0, sent_ = 0;
  bool stopping_ = false;
  bool sending_ = false;  // the thread is writing to the session
  int now_senders_ = 0;   // InodeNow callers writing to it
  std::atomic<bool> discarded_{false};
  std::thread thread_;
};

}  // namespace ktmfs::fs

// A staged file's big writes, queued to the device without waiting for it. Written one at a
// time, each big write of a transaction waited for the device before the writer's next one
// could even reach the daemon, so a stream of 1 MiB writes ran at the device's speed for one
// request in flight, about half of what the same writes reach through the page cache. Here a
// write's data is handed to io_uring in a buffer of the writer's, and the request is answered;
// the device works on several at once while the writer sends the next. Data gathered into the
// FUSE thread's buffer (ThreadBuffer) is not copied: the writer takes that buffer and gives the
// thread one of its own.
//
// What a queued write can still meet is found later: the first failure is kept, and Drain (which
// the staged file calls before anything reads, truncates, syncs or closes it) returns it. Space
// is allocated before a write is queued (StagedFile does it), so a full filesystem refuses the
// write itself; what is left for later is the device's own failure (EIO), which a commit then
// meets at its sync of staging and refuses, as a buffered write's error is met at fsync.
//
// Not thread-safe: its staged file's lock guards it. At most kDepth writes are in flight per
// file, and kProcessBudget bytes across the process: past that a write waits for its file's
// oldest, and with none of its own in flight it is written synchronously.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fs/tx/direct_io.h"
#include "log/status.h"

namespace ktmfs::fstx {

class AsyncDirectWriter {
 public:
  static constexpr unsigned kDepth = 8;
  static constexpr uint64_t kProcessBudget = 64 << 20;
  // Writes above this size are written synchronously.
  static constexpr uint64_t kMaxWrite = 4 << 20;

  // Null where io_uring cannot be set up (the caller writes synchronously). `what` names the
  // file in messages.
  static std::unique_ptr<AsyncDirectWriter> Create(std::string what);
  ~AsyncDirectWriter();  // waits for every write in flight
  AsyncDirectWriter(const AsyncDirectWriter&) = delete;
  AsyncDirectWriter& operator=(const AsyncDirectWriter&) = delete;

  // Queues `data` to be written at `offset` (both aligned for O_DIRECT) of `direct_fd`; what
  // the device does not take directly (EINVAL, a short write) is written through `fd`, the same
  // file without O_DIRECT, when it completes. Both must stay open until Drain. False: not
  // queued (it overlaps a write in flight, which it could overtake, or is too big, or the
  // process's budget is spent); the caller drains and writes it itself. An error: an earlier
  // write failed (nothing is queued).
  Result<bool> Queue(int fd, int direct_fd, uint64_t offset, std::span<const std::byte> data);
  // Waits for every queued write; the first failure of any since the writer was made.
  Status Drain();
  bool idle() const { return in_flight_.empty(); }

 private:
  struct Write {
    uint64_t offset = 0;
    uint64_t length = 0;
    int fd = -1;  // for what direct I/O refuses
    OwnedBuffer buffer;
    // Given up on when the ring failed: the kernel may still use its buffer, so neither is ever
    // used again (the buffer is leaked on purpose).
    bool lost = false;
    bool free() const { return buffer.data == nullptr && !lost; }
  };
  explicit AsyncDirectWriter(std::string what) : what_(std::move(what)) {}
  // Waits for one completion and retires it.
  void WaitOne();
  // A free buffer of at least `length` bytes; empty when memory is short.
  OwnedBuffer TakeBuffer(uint64_t length);
  bool Overlaps(uint64_t offset, uint64_t length) const;

  const std::string what_;
  io_uring ring_{};
  bool ring_ok_ = false;
  std::deque<Write*> in_flight_;
  std::vector<std::unique_ptr<Write>> writes_;  // every Write, in flight or free
  std::vector<OwnedBuffer> free_buffers_;       // let go of at Drain
  Status failed_ = Status::Ok();
};

}  // namespace ktmfs::fstx

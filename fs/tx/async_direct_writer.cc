#include "fs/tx/async_direct_writer.h"

#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "fs/tx/direct_io.h"

namespace ktmfs::fstx {
namespace {

// Bytes queued by every writer of the process: each holds its data in a buffer until done.
std::atomic<uint64_t> process_in_flight{0};

}  // namespace

std::unique_ptr<AsyncDirectWriter> AsyncDirectWriter::Create(std::string what) {
  std::unique_ptr<AsyncDirectWriter> w(new AsyncDirectWriter(std::move(what)));
  if (io_uring_queue_init(kDepth, &w->ring_, 0) < 0) return nullptr;
  w->ring_ok_ = true;
  return w;
}

AsyncDirectWriter::~AsyncDirectWriter() {
  // The kernel may still be reading the buffers.
  while (!in_flight_.empty())
    WaitOne();
  if (ring_ok_) io_uring_queue_exit(&ring_);
  for (const OwnedBuffer& b : free_buffers_)
    std::free(b.data);
}

bool AsyncDirectWriter::Overlaps(uint64_t offset, uint64_t length) const {
  for (const Write* w : in_flight_)
    if (offset < w->offset + w->length && w->offset < offset + length) return true;
  return false;
}

OwnedBuffer AsyncDirectWriter::TakeBuffer(uint64_t length) {
  for (auto it = free_buffers_.begin(); it != free_buffers_.end(); ++it) {
    if (it->size >= length) {
      OwnedBuffer b = *it;
      free_buffers_.erase(it);
      return b;
    }
  }
  void* p = nullptr;
  const size_t size = static_cast<size_t>(length);
  if (posix_memalign(&p, kDirectAlign, size) != 0) return {};
  return {static_cast<std::byte*>(p), size};
}

Result<bool> AsyncDirectWriter::Queue(int fd, int direct_fd, uint64_t offset,
                                      std::span<const std::byte> data) {
  assert(offset % kDirectAlign == 0 && data.size() % kDirectAlign == 0);
  if (!failed_.ok()) return failed_;
  const uint64_t length = data.size();
  if (length == 0 || length > kMaxWrite || Overlaps(offset, length)) return false;
  while (in_flight_.size() >= kDepth ||
         (!in_flight_.empty() && process_in_flight.load() + length > kProcessBudget))
    WaitOne();
  if (!failed_.ok()) return failed_;
  if (process_in_flight.fetch_add(length) + length > kProcessBudget) {
    process_in_flight.fetch_sub(length);
    return false;
  }
  OwnedBuffer buffer = TakeBuffer(length);
  io_uring_sqe* sqe = buffer.data != nullptr ? io_uring_get_sqe(&ring_) : nullptr;
  if (sqe == nullptr) {
    if (buffer.data != nullptr) free_buffers_.push_back(buffer);
    process_in_flight.fetch_sub(length);
    return false;
  }
  if (OwnedBuffer taken = AdoptThreadBuffer(data.data(), buffer); taken.data != nullptr) {
    buffer = taken;
  } else {
    std::memcpy(buffer.data, data.data(), length);
  }
  Write* w = nullptr;
  for (auto& candidate : writes_)
    if (candidate->free()) w = candidate.get();
  if (w == nullptr) w = writes_.emplace_back(std::make_unique<Write>()).get();
  *w = Write{offset, length, fd, buffer};
  io_uring_prep_write(sqe, direct_fd, buffer.data, static_cast<unsigned>(length),
                      static_cast<off_t>(offset));
  io_uring_sqe_set_data(sqe, w);
  // Once prepared, the entry is the ring's: a submit that fails now (EAGAIN, EBUSY) leaves it
  // for the next one, which WaitOne makes. So the write counts as queued either way.
  in_flight_.push_back(w);
  int r;
  do {
    r = io_uring_submit(&ring_);
  } while (r == -EINTR);
  return true;
}

void AsyncDirectWriter::WaitOne() {
  assert(!in_flight_.empty());
  io_uring_cqe* cqe = nullptr;
  int r;
  do {
    // Submits first whatever an earlier submit left in the ring.
    r = io_uring_submit_and_wait(&ring_, 1);
    if (r >= 0 || r == -EAGAIN || r == -EBUSY) r = io_uring_wait_cqe(&ring_, &cqe);
  } while (r == -EINTR || r == -EAGAIN || r == -EBUSY);
  if (r < 0) {
    // The ring itself failed: no completion can be trusted, so every write counts as failed.
    if (failed_.ok()) failed_ = Status::FromErrno(-r, "wait for writes to " + what_);
    for (Write* w : in_flight_) {
      process_in_flight.fetch_sub(w->length);
      w->lost = true;
    }
    in_flight_.clear();
    return;
  }
  Write* w = static_cast<Write*>(io_uring_cqe_get_data(cqe));
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  // What direct I/O did not take (a device with stricter limits, a short write) is written the
  // ordinary way, as WriteAt does: the data is still in the buffer.
  const uint64_t done = res > 0 ? static_cast<uint64_t>(res) : 0;
  if ((res == -EINVAL || (res >= 0 && done < w->length)) && failed_.ok()) {
    Status rest =
        WriteAt(w->fd, -1, std::span<const std::byte>(w->buffer.data + done, w->length - done),
                w->offset + done, what_);
    res = rest.ok() ? static_cast<int>(w->length) : -rest.code();
  }
  if (failed_.ok() && res < 0)
    failed_ = Status::FromErrno(-res, "write " + what_ + " at offset " + std::to_string(w->offset));
  process_in_flight.fetch_sub(w->length);
  free_buffers_.push_back(w->buffer);
  w->buffer = {};
  for (auto it = in_flight_.begin(); it != in_flight_.end(); ++it) {
    if (*it == w) {
      in_flight_.erase(it);
      break;
    }
  }
}

Status AsyncDirectWriter::Drain() {
  while (!in_flight_.empty())
    WaitOne();
  // Idle buffers are memory no one uses until the next stream of writes.
  for (const OwnedBuffer& b : free_buffers_)
    std::free(b.data);
  free_buffers_.clear();
  return failed_;
}

}  // namespace ktmfs::fstx

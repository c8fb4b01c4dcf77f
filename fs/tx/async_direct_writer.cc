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

Result<bool> AsyncDirectWriter::Queue(int direct_fd, uint64_t offset,
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
    if (candidate->buffer.data == nullptr) w = candidate.get();
  if (w == nullptr) w = writes_.emplace_back(std::make_unique<Write>()).get();
  *w = Write{offset, length, buffer};
  io_uring_prep_write(sqe, direct_fd, buffer.data, static_cast<unsigned>(length),
                      static_cast<off_t>(offset));
  io_uring_sqe_set_data(sqe, w);
  int r;
  do {
    r = io_uring_submit(&ring_);
  } while (r == -EINTR);
  if (r < 1) {
    // Not handed to the kernel: nothing will complete it.
    w->buffer = {};
    free_buffers_.push_back(buffer);
    process_in_flight.fetch_sub(length);
    return false;
  }
  in_flight_.push_back(w);
  return true;
}

void AsyncDirectWriter::WaitOne() {
  assert(!in_flight_.empty());
  io_uring_cqe* cqe = nullptr;
  int r;
  do {
    r = io_uring_wait_cqe(&ring_, &cqe);
  } while (r == -EINTR);
  if (r < 0) {
    // The ring itself failed: no completion can be trusted, so every write counts as failed.
    if (failed_.ok()) failed_ = Status::FromErrno(-r, "wait for writes to " + what_);
    for (Write* w : in_flight_) {
      process_in_flight.fetch_sub(w->length);
      // The kernel may still hold the buffer: it is never reused, nor freed.
      w->buffer = {};
    }
    in_flight_.clear();
    return;
  }
  Write* w = static_cast<Write*>(io_uring_cqe_get_data(cqe));
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  if (failed_.ok()) {
    const std::string where = what_ + " at offset " + std::to_string(w->offset);
    if (res < 0) {
      failed_ = Status::FromErrno(-res, "write " + where);
    } else if (static_cast<uint64_t>(res) != w->length) {
      failed_ = Status::IoError("write " + where + ": " + std::to_string(res) + " of " +
                                std::to_string(w->length) + " bytes written");
    }
  }
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

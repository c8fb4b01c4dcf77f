#include "fs/fuse/fuse_ring.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cassert>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "fs/fuse/kernel_channel.h"
#include "fs/mount/daemon_log.h"

namespace ktmfs::fs {

namespace {

constexpr uint64_t kTagWake = 0;  // the entry's eventfd became readable: stop
constexpr uint64_t kTagCmd = 1;   // the entry's register or commit-and-fetch completed
constexpr size_t kPayloadAlign = 4096;

}  // namespace

struct FuseRing::Entry {
  uint16_t qid = 0;
  unsigned index = 0;
  io_uring ring{};
  bool ring_ready = false;
  int wake_fd = -1;
  RingHeaders* headers = nullptr;  // kernel-visible: registered
  char* buffer = nullptr;          // [slack | payload], the payload registered
  char* payload = nullptr;
  size_t payload_cap = 0;
  iovec reg[2]{};
  uint64_t commit_id = 0;
  // The unique of the request this entry holds and has no reply for yet; 0 when none.
  std::atomic<uint64_t> owed{0};
  // A reply from a thread other than the entry's (none of the daemon's handlers defers one, but
  // libfuse allows it) is packed under mu and announced through cv.
  std::mutex mu;
  std::condition_variable cv;
  bool packed_elsewhere = false;

  ~Entry() {
    if (ring_ready) io_uring_queue_exit(&ring);
    if (wake_fd >= 0) close(wake_fd);
    std::free(buffer);
    delete headers;
  }
};

namespace {

// The entry whose thread this is; null on every other thread.
thread_local FuseRing::Entry* this_entry = nullptr;
// The ring whose entries foreign replies are matched against.
std::atomic<FuseRing*> running{nullptr};
std::mutex running_mu;  // held while running's entries are scanned or torn down

}  // namespace

Result<char*> LegacyRequestAt(const RingHeaders& h, char* payload, size_t payload_cap,
                              size_t* len) {
  fuse_in_header in;
  std::memcpy(&in, h.in_out, sizeof in);
  const size_t payload_sz = h.ent_in_out.payload_sz;
  if (payload_sz > payload_cap || in.len < sizeof in + payload_sz)
    return Status::Error(EPROTO, "ring request " + std::to_string(in.unique) + " (opcode " +
                                     std::to_string(in.opcode) + "): length " +
                                     std::to_string(in.len) + " with a payload of " +
                                     std::to_string(payload_sz));
  const size_t arg0 = in.len - sizeof in - payload_sz;
  if (arg0 > kRingOpInSize)
    return Status::Error(EPROTO, "ring request " + std::to_string(in.unique) + " (opcode " +
                                     std::to_string(in.opcode) + "): first argument of " +
                                     std::to_string(arg0) + " bytes");
  char* start = payload - arg0 - sizeof in;
  std::memcpy(start, &in, sizeof in);
  std::memcpy(start + sizeof in, h.op_in, arg0);
  *len = in.len;
  return start;
}

Result<size_t> PackReply(const iovec* iov, int count, RingHeaders* h, char* payload,
                         size_t payload_cap) {
  size_t total = 0;
  for (int i = 0; i < count; ++i)
    total += iov[i].iov_len;
  if (total < sizeof(fuse_out_header))
    return Status::Error(EPROTO, "a reply of " + std::to_string(total) + " bytes has no header");
  if (total - sizeof(fuse_out_header) > payload_cap)
    return Status::Error(EOVERFLOW, "a reply of " + std::to_string(total) +
                                        " bytes does not fit a ring entry's payload of " +
                                        std::to_string(payload_cap));
  // The header may straddle iovecs when the reply was read back from a splice.
  size_t at = 0;  // bytes of the reply placed so far
  for (int i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    size_t n = iov[i].iov_len;
    if (at < sizeof(fuse_out_header)) {
      size_t take = std::min(n, sizeof(fuse_out_header) - at);
      std::memcpy(h->in_out + at, p, take);
      at += take;
      p += take;
      n -= take;
    }
    // A handler that built its reply in the payload itself needs no copy.
    if (n > 0 && p != payload + (at - sizeof(fuse_out_header)))
      std::memmove(payload + (at - sizeof(fuse_out_header)), p, n);
    at += n;
  }
  h->ent_in_out.payload_sz = static_cast<uint32_t>(total - sizeof(fuse_out_header));
  return total;
}

void PrepareRegister(io_uring_sqe* sqe, int dev_fd, uint16_t qid, iovec* two_iovs) {
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd;
  sqe->cmd_op = kRingCmdRegister;
  sqe->addr = reinterpret_cast<uint64_t>(two_iovs);
  sqe->len = 2;
  RingCmdReq req{};
  req.qid = qid;
  std::memcpy(sqe->cmd, &req, sizeof req);
}

void PrepareCommitAndFetch(io_uring_sqe* sqe, int dev_fd, uint16_t qid, uint64_t commit_id) {
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd;
  sqe->cmd_op = kRingCmdCommitAndFetch;
  RingCmdReq req{};
  req.qid = qid;
  req.commit_id = commit_id;
  std::memcpy(sqe->cmd, &req, sizeof req);
}

unsigned CountCpuList(const std::string& list) {
  unsigned count = 0;
  size_t i = 0;
  auto number = [&](unsigned* out) {
    if (i >= list.size() || list[i] < '0' || list[i] > '9') return false;
    unsigned v = 0;
    while (i < list.size() && list[i] >= '0' && list[i] <= '9')
      v = v * 10 + static_cast<unsigned>(list[i++] - '0');
    *out = v;
    return true;
  };
  while (i < list.size() && list[i] != '\n') {
    unsigned lo, hi;
    if (!number(&lo)) return 0;
    hi = lo;
    if (i < list.size() && list[i] == '-') {
      ++i;
      if (!number(&hi) || hi < lo) return 0;
    }
    count += hi - lo + 1;
    if (i < list.size() && list[i] == ',') ++i;
  }
  return count;
}

size_t RingPayloadSize(uint32_t max_write, uint32_t max_pages, size_t page_size) {
  size_t size = FUSE_MIN_READ_BUFFER;
  size = std::max<size_t>(size, max_write);
  size = std::max<size_t>(size, static_cast<size_t>(max_pages) * page_size);
  return size;
}

FuseRing::FuseRing(fuse_session* se, int dev_fd, const Config& config)
    : se_(se), dev_fd_(dev_fd), config_(config) {}

FuseRing::~FuseRing() {
  Stop();
}

void FuseRing::Start() {
  const size_t cap = (config_.payload_size + kPayloadAlign - 1) / kPayloadAlign * kPayloadAlign;
  for (unsigned q = 0; q < config_.queues; ++q) {
    for (unsigned k = 0; k < config_.entries_per_queue; ++k) {
      auto e = std::make_unique<Entry>();
      e->qid = static_cast<uint16_t>(q);
      e->index = k;
      e->headers = new RingHeaders{};
      // The payload starts on a page, the slack in front of it for the legacy layout.
      e->buffer = static_cast<char*>(std::aligned_alloc(kPayloadAlign, kPayloadAlign + cap));
      if (e->buffer == nullptr) break;
      e->payload = e->buffer + kPayloadAlign;
      e->payload_cap = cap;
      e->reg[0] = {e->headers, sizeof(RingHeaders)};
      e->reg[1] = {e->payload, cap};
      // Made before the thread runs, so Stop can always wake it.
      e->wake_fd = eventfd(0, EFD_CLOEXEC);
      if (e->wake_fd < 0) break;
      entries_.push_back(std::move(e));
    }
  }
  {
    std::lock_guard l(running_mu);
    running.store(this);
  }
  for (auto& e : entries_)
    threads_.emplace_back([this, p = e.get()] { Serve(p); });
}

void FuseRing::Stop() {
  stopping_.store(true);
  for (auto& e : entries_) {
    std::lock_guard l(e->mu);
    e->cv.notify_all();
    if (e->wake_fd >= 0) (void)!eventfd_write(e->wake_fd, 1);
  }
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  std::lock_guard l(running_mu);
  FuseRing* self = this;
  running.compare_exchange_strong(self, nullptr);
  entries_.clear();
}

void FuseRing::Serve(Entry* e) {
  this_entry = e;
  // A thread name holds 15 characters.
  const std::string name =
      "ktmfs-ring" + std::to_string(e->qid % 100) + "." + std::to_string(e->index % 100);
  pthread_setname_np(pthread_self(), name.c_str());
  // The kernel puts a request on the queue of the CPU its caller runs on; the entry's thread
  // answers on that CPU, where the caller waits, when the CPU is online.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(e->qid, &cpus);
  (void)pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);

  auto fail = [&](const std::string& what, int err) {
    if (stopping_.load()) return;
    bool first = false;
    if (failure_reported_.compare_exchange_strong(first, true)) {
      // Before every queue has an entry the kernel keeps requests on /dev/fuse; an entry lost
      // later leaves its queue the others.
      DaemonLog(LogLevel::kNotice,
                "FUSE over io_uring: queue " + std::to_string(e->qid) + ", entry " +
                    std::to_string(e->index) + ": " + what + ": " + strerror(err) +
                    (e->commit_id == 0 ? "; requests stay on /dev/fuse unless every queue "
                                         "registers"
                                       : "; the queue serves on with its other entries"));
    }
  };
  if (int r = io_uring_queue_init(4, &e->ring, IORING_SETUP_SQE128); r < 0) {
    fail("io_uring_queue_init", -r);
    return;
  }
  e->ring_ready = true;
  io_uring_sqe* sqe = io_uring_get_sqe(&e->ring);
  io_uring_prep_poll_add(sqe, e->wake_fd, POLLIN);
  io_uring_sqe_set_data64(sqe, kTagWake);
  sqe = io_uring_get_sqe(&e->ring);
  PrepareRegister(sqe, dev_fd_, e->qid, e->reg);
  io_uring_sqe_set_data64(sqe, kTagCmd);
  if (int r = io_uring_submit(&e->ring); r < 0) {
    fail("submitting the registration", -r);
    return;
  }
  while (!stopping_.load()) {
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqe(&e->ring, &cqe);
    if (r == -EINTR) continue;
    if (r < 0) {
      fail("waiting for a request", -r);
      return;
    }
    const uint64_t tag = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    io_uring_cqe_seen(&e->ring, cqe);
    if (tag == kTagWake) return;
    if (res < 0) {
      // The connection's end (unmount, abort) completes every entry with ENOTCONN.
      if (res != -ENOTCONN && res != -ECONNABORTED && res != -ECANCELED && res != -ENODEV)
        fail(e->commit_id == 0 ? "registering" : "committing a reply", -res);
      return;
    }
    if (!Handle(e)) return;
  }
}

bool FuseRing::Handle(Entry* e) {
  e->commit_id = e->headers->ent_in_out.commit_id;
  size_t len = 0;
  Result<char*> start = LegacyRequestAt(*e->headers, e->payload, e->payload_cap, &len);
  if (!start.ok()) {
    // Answer it, or its caller waits forever: the kernel's layout is not what this daemon knows.
    DaemonLog(LogLevel::kError, "FUSE over io_uring: " + start.status().message());
    fuse_out_header out{sizeof out, -EPROTO, e->commit_id};
    std::memcpy(e->headers->in_out, &out, sizeof out);
    e->headers->ent_in_out.payload_sz = 0;
    return Commit(e);
  }
  if (!served_once_.exchange(true) && config_.report_always) {
    DaemonLog(LogLevel::kInfo, "FUSE over io_uring: serving requests (" +
                                   std::to_string(config_.queues) + " queues of " +
                                   std::to_string(config_.entries_per_queue) + " entries)");
  }
  {
    std::lock_guard l(e->mu);
    e->packed_elsewhere = false;
  }
  e->owed.store(e->commit_id);
  KernelChannel::NoteRequest(*start, len);
  fuse_buf buf{};
  buf.size = len;
  buf.mem = *start;
  fuse_session_process_buf(se_, &buf);
  if (e->owed.load() != 0) {
    // The handler kept the request to answer from another thread.
    std::unique_lock l(e->mu);
    e->cv.wait(l, [&] { return e->packed_elsewhere || stopping_.load(); });
    if (!e->packed_elsewhere) return false;
  }
  return Commit(e);
}

bool FuseRing::Commit(Entry* e) {
  // One command is in flight per entry and the ring has four slots: one is always free.
  io_uring_sqe* sqe = io_uring_get_sqe(&e->ring);
  assert(sqe != nullptr);
  if (sqe == nullptr) return false;
  PrepareCommitAndFetch(sqe, dev_fd_, e->qid, e->commit_id);
  io_uring_sqe_set_data64(sqe, kTagCmd);
  for (;;) {
    int r = io_uring_submit(&e->ring);
    if (r >= 0) return true;
    if (r == -EINTR || r == -EAGAIN) continue;
    DaemonLog(LogLevel::kError, "FUSE over io_uring: queue " + std::to_string(e->qid) +
                                    " loses an entry: submitting the reply to request " +
                                    std::to_string(e->commit_id) + ": " + strerror(-r) +
                                    " (the request is answered when the connection ends)");
    return false;
  }
}

bool FuseRing::TakeInto(Entry* e, const iovec* iov, int count) {
  Result<size_t> packed = PackReply(iov, count, e->headers, e->payload, e->payload_cap);
  if (!packed.ok()) {
    DaemonLog(LogLevel::kError, "FUSE over io_uring: request " + std::to_string(e->commit_id) +
                                    ": " + packed.status().message());
    fuse_out_header out{sizeof out, -EIO, e->commit_id};
    std::memcpy(e->headers->in_out, &out, sizeof out);
    e->headers->ent_in_out.payload_sz = 0;
  }
  e->owed.store(0);
  return true;
}

bool FuseRing::TakeReply(const iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique == 0) return false;  // a notification: /dev/fuse's
  if (Entry* e = this_entry; e != nullptr && e->owed.load() == out.unique)
    return TakeInto(e, iov, count);
  // Another thread's reply to a ring request (or a /dev/fuse request's reply, the usual case).
  if (running.load() == nullptr) return false;
  std::lock_guard l(running_mu);
  FuseRing* ring = running.load();
  if (ring == nullptr) return false;
  for (auto& e : ring->entries_) {
    if (e->owed.load() != out.unique) continue;
    std::lock_guard el(e->mu);
    TakeInto(e.get(), iov, count);
    e->packed_elsewhere = true;
    e->cv.notify_all();
    return true;
  }
  return false;
}

char* FuseRing::ReplyRoom(size_t size) {
  Entry* e = this_entry;
  if (e == nullptr || e->owed.load() == 0 || size > e->payload_cap) return nullptr;
  return e->payload;
}

bool FuseRing::ThisThreadOwesReply() {
  return this_entry != nullptr && this_entry->owed.load() != 0;
}

}  // namespace ktmfs::fs

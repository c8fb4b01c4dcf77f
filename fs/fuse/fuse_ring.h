// FUSE over io_uring (Linux 6.14 on, with /sys/module/fuse/parameters/enable_uring set by root),
// driven from libfuse 3.14, which knows nothing of it.
//
// Once INIT has taken FUSE_OVER_IO_URING, the daemon registers ring entries with the kernel:
// per CPU one queue, per queue a few entries, each a header area and a payload buffer. When every
// queue has an entry, the kernel stops queueing requests on /dev/fuse and writes each into a free
// entry of the queue of the CPU its caller runs on, completing that entry's io_uring command. The
// reply goes back in the same entry, and one command commits it and asks for the next request.
// FORGET, INTERRUPT and the daemon's notifications stay on /dev/fuse, served by libfuse's loop.
//
// Each entry has its own thread and its own io_uring: the thread waits for a request, lays it out
// as /dev/fuse would have delivered it (fuse_in_header, the opcode's fixed argument, the rest)
// right in front of the payload, so nothing is copied, and hands it to
// fuse_session_process_buf. The handler replies through the channel's writev (or splice_send),
// which gives the reply to the entry instead of the device; the thread then commits it. The
// kernel runs the copy of the next request into the entry in the task that submitted the commit,
// so only the entry's own thread submits; a reply from another thread is handed to it.
//
// The layouts below are the kernel's ABI (linux/fuse.h 7.42), which Debian 12's headers predate.
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "log/status.h"

struct io_uring_sqe;

namespace ktmfs::fs {

inline constexpr uint64_t kInitOverIoUring = 1ull << 41;  // FUSE_OVER_IO_URING, in flags2

// struct fuse_uring_ent_in_out
struct RingEntInOut {
  uint64_t flags;
  uint64_t commit_id;  // the request's unique, to be named by the commit
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
static_assert(sizeof(RingEntInOut) == 32);

// struct fuse_uring_req_header: an entry's header area (iov[0] of its registration).
inline constexpr size_t kRingInOutSize = 128;  // FUSE_URING_IN_OUT_HEADER_SZ
inline constexpr size_t kRingOpInSize = 128;   // FUSE_URING_OP_IN_OUT_SZ
struct RingHeaders {
  char in_out[kRingInOutSize];  // fuse_in_header on a request, fuse_out_header on a reply
  char op_in[kRingOpInSize];    // the opcode's fixed argument (the request's first)
  RingEntInOut ent_in_out;
};
static_assert(sizeof(RingHeaders) == 288);

// struct fuse_uring_cmd_req, in the command area of a 128-byte SQE.
struct RingCmdReq {
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingCmdReq) == 24);

inline constexpr uint32_t kRingCmdRegister = 1;        // FUSE_IO_URING_CMD_REGISTER
inline constexpr uint32_t kRingCmdCommitAndFetch = 2;  // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

// ---- The message rules, without a device (unit-tested) -----------------------------------

// Room an entry keeps in front of its payload for the legacy layout's header and first argument.
inline constexpr size_t kRingLegacySlack = sizeof(fuse_in_header) + kRingOpInSize;

// Lays the request in `h` and `payload` out as /dev/fuse delivers it, ending where the payload
// ends: the header and the first argument go into the kRingLegacySlack bytes before `payload`.
// Returns where the request starts and sets *len, or an error for a request whose sizes do not
// add up (header length, payload size and the first argument's room).
Result<char*> LegacyRequestAt(const RingHeaders& h, char* payload, size_t payload_cap, size_t* len);

// Puts the reply in `iov` (fuse_out_header first, as libfuse writes to /dev/fuse) into the
// entry: the header into h->in_out, the arguments one after another into the payload, their
// size into h->ent_in_out.payload_sz. Returns the reply's length, or an error when it does not
// fit (the kernel never asks for more than the payload holds).
Result<size_t> PackReply(const iovec* iov, int count, RingHeaders* h, char* payload,
                         size_t payload_cap);

// The two commands, in a zeroed 128-byte SQE.
void PrepareRegister(io_uring_sqe* sqe, int dev_fd, uint16_t qid, iovec* two_iovs);
void PrepareCommitAndFetch(io_uring_sqe* sqe, int dev_fd, uint16_t qid, uint64_t commit_id);

// The number of CPUs in a list like /sys/devices/system/cpu/possible ("0-3,8"); 0 if malformed.
unsigned CountCpuList(const std::string& list);

// The size the kernel requires of an entry's payload: the largest of FUSE_MIN_READ_BUFFER,
// max_write and max_pages pages, as INIT settled them.
size_t RingPayloadSize(uint32_t max_write, uint32_t max_pages, size_t page_size);

// ---- The queues -----------------------------------------------------------------------------

class FuseRing {
 public:
  struct Config {
    unsigned queues = 0;  // the kernel's: one per possible CPU
    unsigned entries_per_queue = 0;
    size_t payload_size = 0;
    bool report_always = false;  // log, at info, when the ring first serves a request
  };

  // One registered entry and its thread (fuse_ring.cc).
  struct Entry;

  FuseRing(fuse_session* se, int dev_fd, const Config& config);
  FuseRing(const FuseRing&) = delete;
  FuseRing& operator=(const FuseRing&) = delete;
  ~FuseRing();  // Stop()

  // Starts one thread per entry; each registers its entry and serves it.
  void Start();
  // Wakes every entry's thread, waits for it to finish the request it holds and joins it. The
  // kernel answers requests still queued for the ring when the device closes.
  void Stop();

  // For the channel's writev: takes the reply in `iov` if it answers a request a ring entry
  // holds. Returns false for every other message (replies to /dev/fuse requests, notifications).
  static bool TakeReply(const iovec* iov, int count);
  // For the channel's splice_send: whether this thread is handling a ring request it has not
  // answered yet, so a spliced message it sends may be that answer.
  static bool ThisThreadOwesReply();
  // Where a reply of up to `size` bytes of data may be built for the ring request this thread
  // handles, so that it is not copied again (see PackReply); null when there is none.
  static char* ReplyRoom(size_t size);

 private:
  void Serve(Entry* e);
  bool Handle(Entry* e);
  bool Commit(Entry* e);
  static bool TakeInto(Entry* e, const iovec* iov, int count);

  fuse_session* const se_;
  const int dev_fd_;
  const Config config_;
  std::vector<std::unique_ptr<Entry>> entries_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> served_once_{false};
  std::atomic<bool> failure_reported_{false};
};

}  // namespace ktmfs::fs

// The daemon's end of /dev/fuse, put into libfuse's session as custom I/O
// (fuse_session_custom_io, libfuse 3.14). libfuse reads every request and writes every reply
// through it, so it sees the raw messages both ways. That is how the daemon gets two things
// libfuse 3.14 does not know about:
//
// - INIT flags newer than it: the reply to the kernel's INIT is patched on its way out to take
//   FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it. The kernel then marks the superblock
//   SB_NOSEC and stops asking for security.capability before every write(2) (one GETXATTR
//   round trip per write), and leaves the clearing of set-id bits to the daemon.
// - kernel passthrough (FUSE_PASSTHROUGH, Linux 6.9): the INIT reply takes it with a stack depth
//   of one, a backing file is registered on the device (FUSE_DEV_IOC_BACKING_OPEN, which needs
//   CAP_SYS_ADMIN), and the reply to an OPEN or CREATE the daemon chose to pass through is
//   patched to carry FOPEN_PASSTHROUGH and the backing id. The kernel then reads, writes and
//   maps that open file on the backing file itself; which opens may (fs/ops/passthrough.h) is
//   the daemon's business, not the channel's.
// - FUSE over io_uring (FUSE_OVER_IO_URING, Linux 6.14, when root has enabled it): the INIT reply
//   takes it, and once the reply is written the channel starts the ring (fs/fuse/fuse_ring.h),
//   whose entries then carry the requests and replies /dev/fuse carried. Replies to the ring's
//   requests pass through this channel's writev and splice_send like any other and are handed to
//   it.
// - per-request flags it drops: FUSE_WRITE_KILL_SUIDGID of a WRITE, FUSE_OPEN_KILL_SUIDGID of
//   an OPEN or CREATE, FATTR_KILL_SUIDGID of a truncating SETATTR. Each says the caller lacks
//   CAP_FSETID in the initial user namespace, which /proc/PID/status cannot tell (a user
//   namespace's root shows a full CapEff there). They are kept for the thread that reads the
//   request, which is the thread that then handles it (libfuse's loops read and process on one
//   thread), until it reads the next; the set-id rules (fs/ops/setid.h) take them over /proc.
//
// Requests are read with plain read(2), not spliced (libfuse splices only when given a
// splice_receive), so every request's bytes pass through here; replies that carry file data
// may still be spliced to the device (splice_send).
#pragma once

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "fs/fuse/fuse_ring.h"
#include "log/status.h"

namespace ktmfs::fs {

// What the daemon may take from the kernel's offer (-o options).
struct ChannelWants {
  bool killpriv_v2 = true;
  bool passthrough = false;
  bool uring = false;
  unsigned uring_entries = 4;  // ring entries (and threads) per CPU
  // Log what INIT settled even when the kernel gave all that was wanted: in the foreground and
  // with -d. A daemon in the background says nothing in syslog about a healthy mount, only when
  // it runs without a feature it wanted.
  bool report_always = false;
  bool Any() const { return killpriv_v2 || passthrough || uring; }
};

// What INIT settled, for the mount's report and for the handlers.
struct Negotiated {
  uint32_t major = 0, minor = 0;
  bool killpriv_v2_offered = false;
  bool killpriv_v2 = false;  // taken: SB_NOSEC, and set-id clearing left to the daemon
  bool passthrough_offered = false;
  bool passthrough = false;  // taken: opens may be answered with a backing id
  bool uring_offered = false;
  bool uring = false;  // taken: requests move to ring entries once they are registered
  uint32_t max_write = 0, max_pages = 0;  // as the INIT reply settled them
};

// The kernel's passthrough ABI (linux/fuse.h 7.40), which Debian 12's headers predate.
inline constexpr uint64_t kInitPassthrough = 1ull << 37;  // FUSE_PASSTHROUGH, in flags2
inline constexpr uint32_t kOpenPassthrough = 1u << 7;     // FOPEN_PASSTHROUGH
// The INIT reply's max_stack_depth word (7.40): the first of what 7.38 calls
// fuse_init_out.unused, right after flags2.
inline constexpr size_t kInitMaxStackDepthAt = offsetof(fuse_init_out, unused);
static_assert(kInitMaxStackDepthAt == offsetof(fuse_init_out, flags2) + sizeof(uint32_t));

// ---- The message rules, without a device (unit-tested) -----------------------------------

// What the channel notes of one request as read from the device.
struct RequestFacts {
  uint32_t opcode = 0;
  uint64_t unique = 0;
  bool kill_suidgid = false;  // WRITE, OPEN, CREATE or truncate: the caller lacks CAP_FSETID
  uint64_t init_flags = 0;    // INIT: the kernel's offer (flags2 in the high half with INIT_EXT)
  uint32_t init_major = 0, init_minor = 0;
};

// Reads the header and the argument fields the channel needs from a request of `len` bytes;
// a request too short for what its opcode needs yields only its opcode and unique.
RequestFacts InspectRequest(const void* buf, size_t len);

// The INIT flags (FUSE_* of linux/fuse.h, flags2 in the high half) the daemon adds to its INIT
// reply, given the kernel's offer and what it wants.
uint64_t InitFlagsToAdd(uint64_t offered, const ChannelWants& wants);

// Sets `add` in the flags of an INIT reply laid out as libfuse sends it (iov[0] the
// fuse_out_header, iov[1] the fuse_init_out) when its header names `unique` and carries no
// error. Bits of flags2 also set FUSE_INIT_EXT (the kernel reads flags2 only then), and
// passthrough sets a stack depth of one (the backing filesystem must not be stacked itself).
// Returns whether it did.
bool AddInitReplyFlags(iovec* iov, int count, uint64_t unique, uint64_t add);

// Marks the reply to OPEN or CREATE `unique` (its fuse_open_out last in iov[count - 1]) as
// passed through to `backing_id`, when its header names `unique` and carries no error. Returns
// whether it did.
bool SetOpenReplyPassthrough(iovec* iov, int count, uint64_t unique, int32_t backing_id);

// ---- The channel ---------------------------------------------------------------------------

class KernelChannel {
 public:
  explicit KernelChannel(const ChannelWants& wants) : wants_(wants) {}
  KernelChannel(const KernelChannel&) = delete;
  KernelChannel& operator=(const KernelChannel&) = delete;
  ~KernelChannel();

  // Makes `se`, mounted and not yet served, read and write its device through this channel.
  // One channel per process: libfuse hands the callbacks the session's userdata, which is the
  // filesystem's, so they find the channel through a process-wide pointer.
  Status Install(fuse_session* se);

  Negotiated negotiated() const;
  // Whether the kernel handed set-id clearing on write and truncate to the daemon.
  bool killpriv_v2() const { return killpriv_v2_.load(std::memory_order_acquire); }

  // "kernel FUSE 7.N: HANDLE_KILLPRIV_V2 taken (...)" and the like, for the mount's log.
  std::string Report() const;

  // Stops the ring's threads, if INIT started them; before the session's end.
  void StopRing();

  // Notes the request in `buf` for the handler this thread runs next (the per-request flags
  // above, its unique for a patched reply); the ring's threads call it for theirs.
  static void NoteRequest(const void* buf, size_t len);

  // Whether the request this thread is handling carries the kernel's word that its caller
  // lacks CAP_FSETID (see above). False without an installed channel.
  static bool CurrentRequestKillsSuidgid();
  // Whether the request this thread is handling is a WRITE from a writer the kernel vouches
  // has CAP_FSETID: HANDLE_KILLPRIV_V2 was taken and the WRITE does not ask for clearing. False
  // when the daemon must decide from the writer's credentials itself (fallocate, copies).
  static bool CurrentWriterKeepsSetid();

  // Passthrough, for fs/ops/passthrough.h. Whether INIT took it.
  static bool PassthroughTaken();
  // Registers the regular file open at `fd` (O_PATH will do) as a backing file: its id, or the
  // errno (EPERM without CAP_SYS_ADMIN, ELOOP for a stacked backing filesystem).
  static Result<int32_t> BackingOpen(int fd);
  static void BackingClose(int32_t backing_id);
  // Makes this thread's next reply, if it answers the request this thread is handling with
  // success, pass the opened file through to `backing_id` (0: none).
  static void PassNextOpenReplyTo(int32_t backing_id);

 private:
  static ssize_t Read(int fd, void* buf, size_t len, void* userdata);
  static ssize_t Writev(int fd, iovec* iov, int count, void* userdata);
  static ssize_t SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                            unsigned flags, void* userdata);
  void OnInitRequest(const RequestFacts& f);
  void OnReply(iovec* iov, int count);
  // Notes the INIT reply among the replies going out, patched: true for that one.
  bool SettleInit(iovec* iov, int count);
  void StartRing();

  const ChannelWants wants_;
  std::atomic<bool> init_pending_{false};  // an INIT was read and not answered yet
  std::atomic<bool> killpriv_v2_{false};
  std::atomic<bool> passthrough_{false};
  int fd_ = -1;  // the session's /dev/fuse
  fuse_session* se_ = nullptr;
  std::atomic<bool> start_ring_{false};  // INIT took the ring and its reply is on its way
  std::unique_ptr<FuseRing> ring_;       // set once, by the thread that wrote INIT's reply
  mutable std::mutex mu_;
  uint64_t init_unique_ = 0;
  uint64_t init_add_ = 0;
  Negotiated negotiated_;
};

}  // namespace ktmfs::fs

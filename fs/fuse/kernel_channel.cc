#include "fs/fuse/kernel_channel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "fs/mount/daemon_log.h"

namespace ktmfs::fs {

namespace {

// The channel the callbacks serve (see Install).
std::atomic<KernelChannel*> installed{nullptr};

// What the last request read on this thread asked of the daemon.
thread_local bool current_kill_suidgid = false;
thread_local uint32_t current_opcode = 0;
thread_local uint64_t current_unique = 0;
// Set by the handler just before it replies (PassNextOpenReplyTo).
thread_local int32_t next_open_backing_id = 0;

// FUSE_DEV_IOC_BACKING_OPEN/CLOSE (linux/fuse.h 7.40).
struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kIocBackingOpen = _IOW(FUSE_DEV_IOC_MAGIC, 1, BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t);

// fuse_open_out as of 7.40: the 7.38 padding word is the backing id.
struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
static_assert(sizeof(OpenOut) == sizeof(fuse_open_out));

bool IsSuccessReplyTo(const iovec* iov, int count, uint64_t unique) {
  if (count < 2 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header h;
  std::memcpy(&h, iov[0].iov_base, sizeof h);
  return h.unique == unique && h.error == 0;
}

// Copies the struct at the start of a request's argument, if the request holds all of it.
template <typename T>
bool ArgOf(const void* buf, size_t len, T* out) {
  if (len < sizeof(fuse_in_header) + sizeof(T)) return false;
  std::memcpy(out, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(T));
  return true;
}

// The kernel's queue count: one per possible CPU.
unsigned RingQueues() {
  static const unsigned queues = [] {
    std::string list;
    if (FILE* f = fopen("/sys/devices/system/cpu/possible", "re")) {
      char line[256];
      if (fgets(line, sizeof line, f) != nullptr) list = line;
      fclose(f);
    }
    return CountCpuList(list);
  }();
  return queues;
}

}  // namespace

RequestFacts InspectRequest(const void* buf, size_t len) {
  RequestFacts f;
  if (len < sizeof(fuse_in_header)) return f;
  fuse_in_header h;
  std::memcpy(&h, buf, sizeof h);
  f.opcode = h.opcode;
  f.unique = h.unique;
  switch (h.opcode) {
    case FUSE_WRITE: {
      fuse_write_in w;
      if (ArgOf(buf, len, &w)) f.kill_suidgid = (w.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
      break;
    }
    case FUSE_OPEN: {
      fuse_open_in o;
      if (ArgOf(buf, len, &o)) f.kill_suidgid = (o.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      break;
    }
    case FUSE_SETATTR: {
      // A truncate: the kernel asks for clearing only for a caller without CAP_FSETID. A chown
      // carries the flag for every caller, and the daemon's chown rule decides that one.
      fuse_setattr_in a;
      if (ArgOf(buf, len, &a))
        f.kill_suidgid = (a.valid & FATTR_KILL_SUIDGID) && (a.valid & FATTR_SIZE) &&
                         !(a.valid & (FATTR_UID | FATTR_GID));
      break;
    }
    case FUSE_CREATE: {
      fuse_create_in c;
      if (ArgOf(buf, len, &c)) f.kill_suidgid = (c.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      break;
    }
    case FUSE_INIT: {
      // Kernels before 7.36 send only the first four words; flags2 counts with FUSE_INIT_EXT.
      struct {
        uint32_t major, minor, max_readahead, flags;
      } head;
      if (!ArgOf(buf, len, &head)) break;
      f.init_major = head.major;
      f.init_minor = head.minor;
      f.init_flags = head.flags;
      fuse_init_in full;
      if ((head.flags & FUSE_INIT_EXT) && ArgOf(buf, len, &full))
        f.init_flags |= static_cast<uint64_t>(full.flags2) << 32;
      break;
    }
    default:
      break;
  }
  return f;
}

uint64_t InitFlagsToAdd(uint64_t offered, const ChannelWants& wants) {
  uint64_t add = 0;
  if (wants.killpriv_v2 && (offered & FUSE_HANDLE_KILLPRIV_V2)) add |= FUSE_HANDLE_KILLPRIV_V2;
  // flags2 reaches the kernel only with FUSE_INIT_EXT, which it offers along with it.
  if (wants.passthrough && (offered & kInitPassthrough) && (offered & FUSE_INIT_EXT))
    add |= kInitPassthrough;
  if (wants.uring && (offered & kInitOverIoUring) && (offered & FUSE_INIT_EXT))
    add |= kInitOverIoUring;
  return add;
}

bool AddInitReplyFlags(iovec* iov, int count, uint64_t unique, uint64_t add) {
  if (!IsSuccessReplyTo(iov, count, unique)) return false;
  constexpr size_t kFlagsAt = offsetof(fuse_init_out, flags);
  constexpr size_t kFlags2At = offsetof(fuse_init_out, flags2);
  const uint32_t add2 = static_cast<uint32_t>(add >> 32);
  const size_t need = add2 != 0 ? kInitMaxStackDepthAt + sizeof(uint32_t) : kFlagsAt + 4;
  if (iov[1].iov_len < need) return false;
  char* out = static_cast<char*>(iov[1].iov_base);
  auto or_word = [out](size_t at, uint32_t bits) {
    uint32_t w;
    std::memcpy(&w, out + at, sizeof w);
    w |= bits;
    std::memcpy(out + at, &w, sizeof w);
  };
  or_word(kFlagsAt, static_cast<uint32_t>(add) | (add2 != 0 ? FUSE_INIT_EXT : 0));
  if (add2 != 0) or_word(kFlags2At, add2);
  if (add & kInitPassthrough) {
    const uint32_t depth = 1;
    std::memcpy(out + kInitMaxStackDepthAt, &depth, sizeof depth);
  }
  return true;
}

bool SetOpenReplyPassthrough(iovec* iov, int count, uint64_t unique, int32_t backing_id) {
  if (!IsSuccessReplyTo(iov, count, unique)) return false;
  // OPEN's argument is a fuse_open_out; CREATE's a fuse_entry_out followed by one.
  iovec& arg = iov[count - 1];
  if (arg.iov_len < sizeof(OpenOut)) return false;
  char* at = static_cast<char*>(arg.iov_base) + arg.iov_len - sizeof(OpenOut);
  OpenOut o;
  std::memcpy(&o, at, sizeof o);
  o.open_flags |= kOpenPassthrough;
  o.backing_id = backing_id;
  std::memcpy(at, &o, sizeof o);
  return true;
}

KernelChannel::~KernelChannel() {
  StopRing();
  KernelChannel* self = this;
  installed.compare_exchange_strong(self, nullptr);
}

Status KernelChannel::Install(fuse_session* se) {
  KernelChannel* none = nullptr;
  if (!installed.compare_exchange_strong(none, this))
    return Status::Error(EBUSY, "a kernel channel is already installed in this process");
  fuse_custom_io io{};
  io.read = &KernelChannel::Read;
  io.writev = &KernelChannel::Writev;
  // Replies spliced from a file (read data) go straight to the device: nothing in them is the
  // channel's business. Requests are not spliced in: the channel must read them.
  io.splice_send = &KernelChannel::SpliceSend;
  fd_ = fuse_session_fd(se);
  se_ = se;
  int r = fuse_session_custom_io(se, &io, fd_);
  if (r != 0) {
    installed.store(nullptr);
    return Status::Error(-r, "fuse_session_custom_io failed");
  }
  return Status::Ok();
}

void KernelChannel::NoteRequest(const void* buf, size_t len) {
  RequestFacts f = InspectRequest(buf, len);
  current_kill_suidgid = f.kill_suidgid;
  current_opcode = f.opcode;
  current_unique = f.unique;
  next_open_backing_id = 0;
  if (f.opcode == FUSE_INIT) {
    if (KernelChannel* c = installed.load()) c->OnInitRequest(f);
  }
}

ssize_t KernelChannel::Read(int fd, void* buf, size_t len, void* /*userdata*/) {
  ssize_t n = read(fd, buf, len);
  if (n < 0) return n;  // errno is libfuse's to read
  const int saved = errno;
  NoteRequest(buf, static_cast<size_t>(n));
  errno = saved;
  return n;
}

ssize_t KernelChannel::Writev(int fd, iovec* iov, int count, void* /*userdata*/) {
  KernelChannel* c = installed.load();
  if (c != nullptr && c->init_pending_.load(std::memory_order_acquire)) c->OnReply(iov, count);
  if (next_open_backing_id != 0) {
    // Only the reply this thread sends for its own request; a notification (unique 0) or an
    // error reply passes unchanged, and the id stays the handler's to release.
    if (SetOpenReplyPassthrough(iov, count, current_unique, next_open_backing_id))
      next_open_backing_id = 0;
  }
  if (FuseRing::TakeReply(iov, count)) {
    ssize_t total = 0;
    for (int i = 0; i < count; ++i)
      total += static_cast<ssize_t>(iov[i].iov_len);
    return total;
  }
  ssize_t n = writev(fd, iov, count);
  // The kernel has taken INIT's reply when the write returns: the ring may register now.
  if (n >= 0 && c != nullptr && c->start_ring_.exchange(false)) {
    const int saved = errno;
    c->StartRing();
    errno = saved;
  }
  return n;
}

ssize_t KernelChannel::SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                  unsigned flags, void* /*userdata*/) {
  if (!FuseRing::ThisThreadOwesReply()) return splice(fdin, offin, fdout, offout, len, flags);
  // A ring request's reply (read data) was spliced into a pipe for the device: read it back and
  // give it to the entry. Anything else this thread sends this way goes to the device whole.
  thread_local std::vector<char> spliced;
  spliced.resize(len);
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fdin, spliced.data() + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -1 : static_cast<ssize_t>(got);
    got += static_cast<size_t>(n);
  }
  iovec whole{spliced.data(), len};
  if (FuseRing::TakeReply(&whole, 1)) return static_cast<ssize_t>(len);
  return write(fdout, spliced.data(), len);
}

void KernelChannel::OnInitRequest(const RequestFacts& f) {
  std::lock_guard l(mu_);
  init_unique_ = f.unique;
  init_add_ = InitFlagsToAdd(f.init_flags, wants_);
  negotiated_.major = f.init_major;
  negotiated_.minor = f.init_minor;
  negotiated_.killpriv_v2_offered = (f.init_flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
  negotiated_.passthrough_offered = (f.init_flags & kInitPassthrough) != 0;
  negotiated_.uring_offered = (f.init_flags & kInitOverIoUring) != 0;
  init_pending_.store(true, std::memory_order_release);
}

void KernelChannel::OnReply(iovec* iov, int count) {
  if (!SettleInit(iov, count)) return;
  const Negotiated n = negotiated();
  if (wants_.killpriv_v2 && !n.killpriv_v2) {
    DaemonLog(LogLevel::kNotice, Report() + ": every write(2) costs one more round trip");
  } else if (wants_.passthrough && !n.passthrough) {
    DaemonLog(LogLevel::kNotice, Report() + ": every read(2) and write(2) goes through the daemon");
  } else if (wants_.report_always) {
    DaemonLog(LogLevel::kInfo, Report());
  }
}

bool KernelChannel::SettleInit(iovec* iov, int count) {
  std::lock_guard l(mu_);
  if (!init_pending_.load()) return false;
  // Notifications (unique 0) and other replies pass; only INIT's own reply is changed. An INIT
  // refused by libfuse (an error reply) takes nothing.
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header h;
  std::memcpy(&h, iov[0].iov_base, sizeof h);
  if (h.unique != init_unique_) return false;
  init_pending_.store(false);
  if (AddInitReplyFlags(iov, count, init_unique_, init_add_)) {
    negotiated_.killpriv_v2 = (init_add_ & FUSE_HANDLE_KILLPRIV_V2) != 0;
    negotiated_.passthrough = (init_add_ & kInitPassthrough) != 0;
    negotiated_.uring = (init_add_ & kInitOverIoUring) != 0;
    if (iov[1].iov_len >= offsetof(fuse_init_out, max_pages) + sizeof(uint16_t)) {
      fuse_init_out out;
      std::memcpy(&out, iov[1].iov_base, std::min(sizeof out, iov[1].iov_len));
      negotiated_.max_write = out.max_write;
      // Without FUSE_MAX_PAGES the kernel keeps its default of 32 pages.
      negotiated_.max_pages = (out.flags & FUSE_MAX_PAGES) ? out.max_pages : 32;
    }
    start_ring_.store(negotiated_.uring);
    killpriv_v2_.store(negotiated_.killpriv_v2, std::memory_order_release);
    passthrough_.store(negotiated_.passthrough, std::memory_order_release);
  }
  return true;
}

Negotiated KernelChannel::negotiated() const {
  std::lock_guard l(mu_);
  return negotiated_;
}

std::string KernelChannel::Report() const {
  Negotiated n = negotiated();
  std::string s = "kernel FUSE " + std::to_string(n.major) + "." + std::to_string(n.minor) + ": ";
  if (!n.killpriv_v2_offered) {
    s += "HANDLE_KILLPRIV_V2 not offered";
  } else if (n.killpriv_v2) {
    s += "HANDLE_KILLPRIV_V2 taken (no security.capability lookup before each write)";
  } else if (!wants_.killpriv_v2) {
    s += "HANDLE_KILLPRIV_V2 offered, not taken (-o nokillpriv_v2)";
  } else {
    s += "HANDLE_KILLPRIV_V2 offered, but libfuse's INIT reply had an unexpected layout";
  }
  s += "; ";
  if (!n.passthrough_offered) {
    s += "PASSTHROUGH not offered";
  } else if (n.passthrough) {
    s += "PASSTHROUGH taken (reads and writes of files open outside transactions go to the "
         "backing file)";
  } else if (!wants_.passthrough) {
    s += "PASSTHROUGH offered, not taken (-o nopassthrough, -o writeback, or not root)";
  } else {
    s += "PASSTHROUGH offered, but libfuse's INIT reply had an unexpected layout";
  }
  s += "; ";
  if (!n.uring_offered) {
    s += "OVER_IO_URING not offered (root enables it: /sys/module/fuse/parameters/enable_uring)";
  } else if (n.uring) {
    s += "OVER_IO_URING taken (" + std::to_string(RingQueues()) + " queues of " +
         std::to_string(wants_.uring_entries) + " entries)";
  } else if (!wants_.uring) {
    s += "OVER_IO_URING offered, not taken (-o nouring, or -s)";
  } else {
    s += "OVER_IO_URING offered, but libfuse's INIT reply had an unexpected layout";
  }
  return s;
}

void KernelChannel::StartRing() {
  const Negotiated n = negotiated();
  FuseRing::Config config;
  config.queues = RingQueues();
  config.entries_per_queue = wants_.uring_entries;
  config.payload_size =
      RingPayloadSize(n.max_write, n.max_pages, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  config.report_always = wants_.report_always;
  if (config.queues == 0) {
    DaemonLog(LogLevel::kNotice,
              "FUSE over io_uring: no CPU list in "
              "/sys/devices/system/cpu/possible; requests stay on /dev/fuse");
    return;
  }
  auto ring = std::make_unique<FuseRing>(se_, fd_, config);
  ring->Start();
  std::lock_guard l(mu_);
  ring_ = std::move(ring);
}

void KernelChannel::StopRing() {
  std::unique_ptr<FuseRing> ring;
  {
    std::lock_guard l(mu_);
    ring = std::move(ring_);
  }
  if (ring) ring->Stop();
}

bool KernelChannel::CurrentRequestKillsSuidgid() {
  return current_kill_suidgid;
}

bool KernelChannel::CurrentWriterKeepsSetid() {
  KernelChannel* c = installed.load();
  return c != nullptr && c->killpriv_v2() && current_opcode == FUSE_WRITE && !current_kill_suidgid;
}

bool KernelChannel::PassthroughTaken() {
  KernelChannel* c = installed.load();
  return c != nullptr && c->passthrough_.load(std::memory_order_acquire);
}

Result<int32_t> KernelChannel::BackingOpen(int fd) {
  KernelChannel* c = installed.load();
  if (c == nullptr || !c->passthrough_.load(std::memory_order_acquire))
    return Status::Error(EOPNOTSUPP, "passthrough was not negotiated");
  BackingMap map{fd, 0, 0};
  int id = ioctl(c->fd_, kIocBackingOpen, &map);
  if (id < 0) return Status::Error(errno, "FUSE_DEV_IOC_BACKING_OPEN");
  return static_cast<int32_t>(id);
}

void KernelChannel::BackingClose(int32_t backing_id) {
  KernelChannel* c = installed.load();
  if (c == nullptr || backing_id <= 0) return;
  uint32_t id = static_cast<uint32_t>(backing_id);
  if (ioctl(c->fd_, kIocBackingClose, &id) != 0) {
    DaemonLog(LogLevel::kWarning, "FUSE_DEV_IOC_BACKING_CLOSE of backing id " +
                                      std::to_string(backing_id) + ": " + strerror(errno));
  }
}

void KernelChannel::PassNextOpenReplyTo(int32_t backing_id) {
  next_open_backing_id = backing_id;
}

}  // namespace ktmfs::fs

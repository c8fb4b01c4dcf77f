#include "fs/kernel_channel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>

#include "fs/daemon_log.h"

namespace ktmfs::fs {

namespace {

// The channel the callbacks serve (see Install).
std::atomic<KernelChannel*> installed{nullptr};

// What the last request read on this thread asked of the daemon.
thread_local bool current_kill_suidgid = false;
thread_local uint32_t current_opcode = 0;

// Copies the struct at the start of a request's argument, if the request holds all of it.
template <typename T>
bool ArgOf(const void* buf, size_t len, T* out) {
  if (len < sizeof(fuse_in_header) + sizeof(T)) return false;
  std::memcpy(out, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(T));
  return true;
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

uint32_t InitFlagsToAdd(uint64_t offered, const ChannelWants& wants) {
  uint32_t add = 0;
  if (wants.killpriv_v2 && (offered & FUSE_HANDLE_KILLPRIV_V2)) add |= FUSE_HANDLE_KILLPRIV_V2;
  return add;
}

bool AddInitReplyFlags(iovec* iov, int count, uint64_t unique, uint32_t add) {
  if (count < 2 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header h;
  std::memcpy(&h, iov[0].iov_base, sizeof h);
  if (h.unique != unique || h.error != 0) return false;
  constexpr size_t kFlagsAt = offsetof(fuse_init_out, flags);
  if (iov[1].iov_len < kFlagsAt + sizeof(uint32_t)) return false;
  char* out = static_cast<char*>(iov[1].iov_base);
  uint32_t flags;
  std::memcpy(&flags, out + kFlagsAt, sizeof flags);
  flags |= add;
  std::memcpy(out + kFlagsAt, &flags, sizeof flags);
  return true;
}

KernelChannel::~KernelChannel() {
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
  int r = fuse_session_custom_io(se, &io, fuse_session_fd(se));
  if (r != 0) {
    installed.store(nullptr);
    return Status::Error(-r, "fuse_session_custom_io failed");
  }
  return Status::Ok();
}

ssize_t KernelChannel::Read(int fd, void* buf, size_t len, void* /*userdata*/) {
  ssize_t n = read(fd, buf, len);
  if (n < 0) return n;  // errno is libfuse's to read
  const int saved = errno;
  RequestFacts f = InspectRequest(buf, static_cast<size_t>(n));
  current_kill_suidgid = f.kill_suidgid;
  current_opcode = f.opcode;
  if (f.opcode == FUSE_INIT) {
    if (KernelChannel* c = installed.load()) c->OnInitRequest(f);
  }
  errno = saved;
  return n;
}

ssize_t KernelChannel::Writev(int fd, iovec* iov, int count, void* /*userdata*/) {
  KernelChannel* c = installed.load();
  if (c != nullptr && c->init_pending_.load(std::memory_order_acquire)) c->OnReply(iov, count);
  return writev(fd, iov, count);
}

ssize_t KernelChannel::SpliceSend(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                  unsigned flags, void* /*userdata*/) {
  return splice(fdin, offin, fdout, offout, len, flags);
}

void KernelChannel::OnInitRequest(const RequestFacts& f) {
  std::lock_guard l(mu_);
  init_unique_ = f.unique;
  init_add_ = InitFlagsToAdd(f.init_flags, wants_);
  negotiated_.major = f.init_major;
  negotiated_.minor = f.init_minor;
  negotiated_.killpriv_v2_offered = (f.init_flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
  init_pending_.store(true, std::memory_order_release);
}

void KernelChannel::OnReply(iovec* iov, int count) {
  if (!SettleInit(iov, count)) return;
  const Negotiated n = negotiated();
  if (wants_.killpriv_v2 && !n.killpriv_v2) {
    DaemonLog(LogLevel::kNotice, Report() + ": every write(2) costs one more round trip");
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
    killpriv_v2_.store(negotiated_.killpriv_v2, std::memory_order_release);
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
  return s;
}

bool KernelChannel::CurrentRequestKillsSuidgid() {
  return current_kill_suidgid;
}

bool KernelChannel::CurrentWriterKeepsSetid() {
  KernelChannel* c = installed.load();
  return c != nullptr && c->killpriv_v2() && current_opcode == FUSE_WRITE && !current_kill_suidgid;
}

}  // namespace ktmfs::fs

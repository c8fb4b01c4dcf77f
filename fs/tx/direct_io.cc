#include "fs/tx/direct_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "fs/tx/beneath.h"

namespace ktmfs::fstx {
namespace {

// Direct I/O goes in pieces of this size through the bounce buffer: big enough that a
// device's per-request cost disappears.
constexpr size_t kChunk = 4 << 20;

uint64_t Down(uint64_t x) {
  return x & ~(kDirectAlign - 1);
}
uint64_t Up(uint64_t x) {
  return Down(x + kDirectAlign - 1);
}
bool Aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0;
}

class AlignedBuffer {
 public:
  ~AlignedBuffer() { std::free(p_); }
  // Empty when memory is short: callers then take the ordinary path.
  std::span<std::byte> Get(size_t n) {
    if (n > size_) {
      std::free(p_);
      p_ = nullptr;
      size_ = 0;
      void* q = nullptr;
      size_t want = static_cast<size_t>(Up(std::max<size_t>(n, 1)));
      if (posix_memalign(&q, kDirectAlign, want) != 0) return {};
      p_ = static_cast<std::byte*>(q);
      size_ = want;
    }
    return {p_, n};
  }
  OwnedBuffer Swap(const std::byte* data, OwnedBuffer replacement) {
    if (p_ == nullptr || data != p_) return {};
    OwnedBuffer taken{p_, size_};
    p_ = replacement.data;
    size_ = replacement.size;
    return taken;
  }

 private:
  std::byte* p_ = nullptr;
  size_t size_ = 0;
};

// Per thread, kept for its next request: callers gather into the first, and a write from it
// may need to bounce through the second; CopyAt reads into the second and the third in turn.
thread_local AlignedBuffer gather_buffer;
thread_local AlignedBuffer bounce_buffer;
thread_local AlignedBuffer ahead_buffer;

// Reads [begin, end) of a file chunk by chunk on a thread of its own, one chunk ahead of the
// caller: the device reads the next chunk while the caller writes this one. Two buffers,
// taken in turn; the caller hands each back with Done before asking for the one after next.
class ReadAhead {
 public:
  struct Chunk {
    std::byte* data = nullptr;
    uint64_t want = 0;
    uint64_t got = 0;  // 0 with err 0: the end
    int err = 0;
  };

  ReadAhead(int fd, uint64_t begin, uint64_t end, std::span<std::byte> a, std::span<std::byte> b)
      : fd_(fd), begin_(begin), end_(end), buffers_{a, b} {
    thread_ = std::thread([this] { Run(); });
  }
  ~ReadAhead() {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  Chunk Next() {
    std::unique_lock l(mu_);
    const int slot = static_cast<int>(next_ % 2);
    cv_.wait(l, [&] { return full_[slot] || finished_; });
    return full_[slot] ? chunks_[slot] : Chunk{};
  }
  void Done() {
    {
      std::lock_guard l(mu_);
      full_[next_ % 2] = false;
      ++next_;
    }
    cv_.notify_all();
  }

 private:
  void Run() {
    uint64_t pos = begin_;
    for (uint64_t i = 0; pos < end_; ++i) {
      const int slot = static_cast<int>(i % 2);
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return !full_[slot] || stop_; });
        if (stop_) break;
      }
      Chunk c;
      c.data = buffers_[slot].data();
      c.want = std::min<uint64_t>(buffers_[slot].size(), end_ - pos);
      ssize_t n;
      do {
        n = ::pread(fd_, c.data, static_cast<size_t>(c.want), static_cast<off_t>(pos));
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        c.err = errno;
      } else {
        c.got = static_cast<uint64_t>(n);
      }
      {
        std::lock_guard l(mu_);
        chunks_[slot] = c;
        full_[slot] = true;
      }
      cv_.notify_all();
      if (c.err != 0 || c.got < c.want) break;
      pos += c.got;
    }
    {
      std::lock_guard l(mu_);
      finished_ = true;
    }
    cv_.notify_all();
  }

  const int fd_;
  const uint64_t begin_, end_;
  const std::span<std::byte> buffers_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  Chunk chunks_[2];
  bool full_[2] = {false, false};
  bool stop_ = false;
  bool finished_ = false;
  uint64_t next_ = 0;  // the caller's next chunk
  std::thread thread_;
};

Status PwriteAll(int fd, const std::byte* p, uint64_t len, uint64_t off, const std::string& what) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, static_cast<size_t>(len), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + what);
    }
    p += n;
    len -= static_cast<uint64_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// Adds to *pos what reached the file; returns 0 or the errno that stopped it (EINVAL: the
// filesystem wants something direct I/O cannot give here, so the caller goes on without).
int PwriteDirect(int fd, const std::byte* p, uint64_t len, uint64_t* pos) {
  uint64_t off = *pos;
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, static_cast<size_t>(len), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    // A short direct write leaves an unaligned rest: the ordinary path finishes it.
    if (Down(static_cast<uint64_t>(n)) != static_cast<uint64_t>(n)) {
      *pos += static_cast<uint64_t>(n);
      return EINVAL;
    }
    p += n;
    len -= static_cast<uint64_t>(n);
    off += static_cast<uint64_t>(n);
    *pos = off;
  }
  return 0;
}

// Copies until `length` bytes or the end of `in`, in the kernel where the filesystems allow,
// else through a buffer.
Status CopyOrdinary(int in, int out, uint64_t offset, uint64_t length, const std::string& what) {
  uint64_t pos = offset, end = offset + length;
  bool kernel = true;
  std::vector<std::byte> buf;
  while (pos < end) {
    if (kernel) {
      loff_t ipos = static_cast<loff_t>(pos), opos = static_cast<loff_t>(pos);
      ssize_t n = ::copy_file_range(in, &ipos, out, &opos, static_cast<size_t>(end - pos), 0);
      if (n > 0) {
        pos += static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) return Status::Ok();  // the end of `in`
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)
        return Status::FromErrno(errno, "copy " + what);
      kernel = false;
      buf.resize(kChunk);
    }
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    ssize_t n = ::pread(in, buf.data(), want, static_cast<off_t>(pos));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + what);
    }
    if (n == 0) return Status::Ok();
    KTMFS_RETURN_IF_ERROR(PwriteAll(out, buf.data(), static_cast<uint64_t>(n), pos, what));
    pos += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace

int ReopenDirect(int fd, int flags) {
  return ::open(FdPath(fd).c_str(), flags | O_DIRECT);
}

std::span<std::byte> ThreadBuffer(size_t size) {
  return gather_buffer.Get(size);
}

OwnedBuffer AdoptThreadBuffer(const std::byte* data, OwnedBuffer replacement) {
  return gather_buffer.Swap(data, replacement);
}

Status WriteAt(int fd, int direct_fd, std::span<const std::byte> data, uint64_t offset,
               const std::string& what) {
  const uint64_t end = offset + data.size();
  const uint64_t mid_begin = Up(offset), mid_end = Down(end);
  if (direct_fd < 0 || mid_begin >= mid_end)
    return PwriteAll(fd, data.data(), data.size(), offset, what);
  KTMFS_RETURN_IF_ERROR(PwriteAll(fd, data.data(), mid_begin - offset, offset, what));
  uint64_t pos = mid_begin;
  while (pos < mid_end) {
    const std::byte* src = data.data() + (pos - offset);
    uint64_t len = mid_end - pos;
    if (!Aligned(src)) {
      len = std::min<uint64_t>(len, kChunk);
      auto b = bounce_buffer.Get(static_cast<size_t>(len));
      if (b.empty()) break;
      std::memcpy(b.data(), src, static_cast<size_t>(len));
      src = b.data();
    }
    int err = PwriteDirect(direct_fd, src, len, &pos);
    if (err == EINVAL) break;
    if (err != 0) return Status::FromErrno(err, "write " + what);
  }
  // The tail, and whatever direct I/O could not take.
  return PwriteAll(fd, data.data() + (pos - offset), end - pos, pos, what);
}

namespace {
// The part of a copy that goes direct: from the first multiple of kLargestFolio in the range to
// the last (empty when begin >= end).
std::pair<uint64_t, uint64_t> DirectMiddle(uint64_t offset, uint64_t length) {
  static_assert(kLargestFolio % kDirectAlign == 0);
  return {(offset + kLargestFolio - 1) / kLargestFolio * kLargestFolio,
          (offset + length) / kLargestFolio * kLargestFolio};
}
}  // namespace

bool CopyGoesDirect(uint64_t offset, uint64_t length) {
  auto [begin, end] = DirectMiddle(offset, length);
  return begin < end;
}

Status CopyAt(int in, int in_direct, int out, int out_direct, uint64_t offset, uint64_t length,
              const std::string& what) {
  const uint64_t end = offset + length;
  const auto [mid_begin, mid_end] = DirectMiddle(offset, length);
  uint64_t pos = offset;
  if (in_direct >= 0 && out_direct >= 0 && mid_begin < mid_end) {
    KTMFS_RETURN_IF_ERROR(CopyOrdinary(in, out, offset, mid_begin - offset, what));
    pos = mid_begin;
    auto a = bounce_buffer.Get(kChunk);
    auto b = ahead_buffer.Get(kChunk);
    if (!a.empty() && !b.empty()) {
      ReadAhead reads(in_direct, pos, mid_end, a, b);
      for (;;) {
        ReadAhead::Chunk c = reads.Next();
        if (c.err == EINVAL) break;
        if (c.err != 0) return Status::FromErrno(c.err, "read " + what);
        // Short at the end of `in`: the ordinary copy below takes the unaligned rest.
        uint64_t whole = Down(c.got);
        if (whole == 0) break;
        int err = PwriteDirect(out_direct, c.data, whole, &pos);
        if (err == EINVAL) break;
        if (err != 0) return Status::FromErrno(err, "write " + what);
        if (whole < c.want) break;
        reads.Done();
      }
    }
  }
  return CopyOrdinary(in, out, pos, end - pos, what);
}

}  // namespace ktmfs::fstx

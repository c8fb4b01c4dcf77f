// Storage on a real directory. Writes of several ranges and their data sync go through io_uring
// (a few rings per storage, each used by one write at a time), the sync linked after the writes
// with IOSQE_IO_LINK so it runs only once they are done; a synced write of one range is a single
// pwritev2 with RWF_DSYNC (see WriteDsync). Reads use pread: they need no ordering and may run
// concurrently.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "log/io.h"

namespace ktmfs::log {
namespace {

// mkdir -p with mode 0700 for what it makes: a log holds the contents of everything logged, so
// only its owner may read it, whatever the process umask.
Status MakePrivateDirs(const std::string& dir) {
  if (dir.empty() || ::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return Status::Ok();
  if (errno != ENOENT) return Status::FromErrno(dir + ": mkdir");
  std::string parent = std::filesystem::path(dir).parent_path();
  if (parent == dir) return Status::Error(ENOENT, dir + ": mkdir: no parent");
  KTMFS_RETURN_IF_ERROR(MakePrivateDirs(parent));
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return Status::Ok();
  return Status::FromErrno(dir + ": mkdir");
}

constexpr size_t kDirectAlignment = 4096;

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) : size(n) {
    data = static_cast<std::byte*>(std::aligned_alloc(kDirectAlignment, n ? n : kDirectAlignment));
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data;
  size_t size;
};

class UringStorage;

class UringFile : public File {
 public:
  UringFile(UringStorage* storage, int fd, bool direct, std::string name, std::string path)
      : storage_(storage),
        fd_(fd),
        direct_(direct),
        name_(std::move(name)),
        path_(std::move(path)) {}
  ~UringFile() override { ::close(fd_); }

  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) override;
  Status Write(std::span<const WriteOp> ops, bool sync) override;
  Status Sync() override {
    WriteOp none[1];
    return Write(std::span<const WriteOp>(none, 0), true);
  }
  Result<uint64_t> Size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, path_);
    return uint64_t(st.st_size);
  }
  // Reserves the blocks, then writes zeros over them: data syncs of later overwrites then need
  // no metadata update (fallocate alone leaves unwritten extents, whose first write each costs a
  // journal commit in fdatasync).
  Status Allocate(uint64_t size) override {
    if (size == 0) return Status::Ok();
    auto current = Size();
    if (!current.ok()) return current.status();
    if (::fallocate(fd_, 0, 0, off_t(size)) != 0)
      return Status::FromErrno(errno, path_ + ": fallocate");
    const size_t chunk = 1 << 20;
    AlignedBuffer zeros(chunk);
    std::memset(zeros.data, 0, chunk);
    for (uint64_t at = *current / kDirectAlignment * kDirectAlignment; at < size;) {
      size_t n = size_t(std::min<uint64_t>(chunk, size - at));
      ssize_t w = ::pwrite(fd_, zeros.data, n, off_t(at));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return Status::FromErrno(w < 0 ? errno : EIO, path_ + ": zero-filling");
      at += uint64_t(w);
    }
    if (::fsync(fd_) != 0) return Status::FromErrno(errno, path_ + ": fsync");
    return Status::Ok();
  }
  const std::string& name() const override { return name_; }

 private:
  Status WriteOnce(std::span<const WriteOp> ops, bool sync, std::vector<size_t>* done);
  Status WriteDsync(const WriteOp& op, std::vector<size_t>* done);

  UringStorage* storage_;
  int fd_;
  bool direct_;  // opened with O_DIRECT (asked for, and the filesystem took it)
  std::string name_;
  std::string path_;
};

class UringStorage : public Storage {
 public:
  UringStorage(std::string dir, const UringStorageOptions& options)
      : dir_(std::move(dir)), options_(options) {}
  ~UringStorage() override {
    for (auto& r : rings_) {
      if (r->ok) io_uring_queue_exit(&r->ring);
    }
  }

  Status Init() {
    KTMFS_RETURN_IF_ERROR(MakePrivateDirs(dir_));
    unsigned depth = options_.queue_depth < 4 ? 4 : options_.queue_depth;
    const unsigned n = options_.rings < 1 ? 1 : options_.rings;
    for (unsigned i = 0; i < n; ++i) {
      rings_.push_back(std::make_unique<Ring>());
      int r = io_uring_queue_init(depth, &rings_.back()->ring, 0);
      if (r < 0) return Status::FromErrno(-r, dir_ + ": io_uring_queue_init");
      rings_.back()->ok = true;
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<File>> Open(const std::string& name, OpenMode mode) override {
    std::string path = dir_ + "/" + name;
    bool direct = options_.direct_io;
    auto fd = OpenFile(path, mode, direct);
    // A filesystem that refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE filesystems) still
    // gets a working log: the same aligned writes, through the page cache.
    if (!fd.ok() && fd.status().code() == EINVAL && direct) {
      fd = OpenFile(path, mode, direct = false);
      // The refused open may have created the file already, so this one did not sync its name.
      if (fd.ok() && mode == OpenMode::kCreate) {
        if (Status s = SyncDir(); !s.ok()) {
          ::close(*fd);
          return s;
        }
      }
    }
    if (!fd.ok()) return fd.status();
    return std::unique_ptr<File>(new UringFile(this, *fd, direct, name, path));
  }

  Status Remove(const std::string& name) override {
    std::string path = dir_ + "/" + name;
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, path);
    return Status::Ok();
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename((dir_ + "/" + from).c_str(), (dir_ + "/" + to).c_str()) != 0) {
      return Status::FromErrno(errno, dir_ + "/" + from + " -> " + to);
    }
    return SyncDir();
  }

  Result<std::vector<std::string>> List() override {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      names.push_back(e.path().filename().string());
    }
    if (ec) return Status::Error(ec.value(), dir_ + ": " + ec.message());
    return names;
  }

  Status SyncDir() override {
    int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, dir_);
    int r = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (r != 0) return Status::FromErrno(err, dir_ + ": fsync");
    return Status::Ok();
  }

  size_t alignment() const override { return options_.direct_io ? kDirectAlignment : 1; }
  std::string Describe() const override { return dir_; }

  // Each write takes a ring that no other write is using, so several flushes (of the log's
  // pipelined group commit) can be in the kernel at once.
  struct Ring {
    std::mutex mu;
    io_uring ring;
    bool ok = false;
  };
  std::unique_lock<std::mutex> AcquireRing(Ring** out) {
    for (auto& r : rings_) {
      std::unique_lock lock(r->mu, std::try_to_lock);
      if (lock.owns_lock()) {
        *out = r.get();
        return lock;
      }
    }
    Ring* r = rings_[next_.fetch_add(1) % rings_.size()].get();
    *out = r;
    return std::unique_lock(r->mu);
  }

 private:
  // open(2), creating the file (and making its name durable) if asked.
  Result<int> OpenFile(const std::string& path, OpenMode mode, bool direct) {
    const int flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);
    int fd = ::open(path.c_str(), flags);
    if (fd < 0 && errno == ENOENT && mode == OpenMode::kCreate) {
      fd = ::open(path.c_str(), flags | O_CREAT | O_EXCL, 0644);
      if (fd >= 0) {
        Status s = SyncDir();
        if (!s.ok()) {
          ::close(fd);
          return s;
        }
      }
    }
    if (fd < 0) return Status::FromErrno(errno, path);
    return fd;
  }

  std::string dir_;
  UringStorageOptions options_;
  std::vector<std::unique_ptr<Ring>> rings_;
  std::atomic<unsigned> next_{0};
};

Result<size_t> UringFile::Read(uint64_t offset, std::span<std::byte> out) {
  size_t total = 0;
  if (!direct_) {
    while (total < out.size()) {
      ssize_t n = ::pread(fd_, out.data() + total, out.size() - total, off_t(offset + total));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, path_ + ": read");
      if (n == 0) break;
      total += size_t(n);
    }
    return total;
  }
  // Direct I/O: read the aligned range around the request into an aligned buffer.
  uint64_t start = offset / kDirectAlignment * kDirectAlignment;
  uint64_t end = (offset + out.size() + kDirectAlignment - 1) / kDirectAlignment * kDirectAlignment;
  AlignedBuffer buf(end - start);
  size_t got = 0;
  while (got < buf.size) {
    ssize_t n = ::pread(fd_, buf.data + got, buf.size - got, off_t(start + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": read");
    if (n == 0) break;
    got += size_t(n);
  }
  if (got <= offset - start) return size_t{0};
  total = std::min<size_t>(out.size(), got - (offset - start));
  std::memcpy(out.data(), buf.data + (offset - start), total);
  return total;
}

// One submission: every write linked to the next, the data sync linked last. `done` gets the
// bytes each write completed, so a short write can be finished by the caller.
Status UringFile::WriteOnce(std::span<const WriteOp> ops, bool sync, std::vector<size_t>* done) {
  UringStorage::Ring* slot;
  auto lock = storage_->AcquireRing(&slot);
  io_uring* ring = &slot->ring;
  done->assign(ops.size(), 0);
  size_t next = 0;
  const unsigned cap = ring->sq.ring_entries;
  Status failure;
  while (next < ops.size() || sync) {
    size_t batch = std::min<size_t>(ops.size() - next, cap - 1);
    bool with_sync = sync && next + batch == ops.size();
    unsigned submitted = 0;
    for (size_t i = 0; i < batch; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      const WriteOp& op = ops[next + i];
      io_uring_prep_write(sqe, fd_, op.data.data(), unsigned(op.data.size()), op.offset);
      if (i + 1 < batch || with_sync) sqe->flags |= IOSQE_IO_LINK;
      io_uring_sqe_set_data64(sqe, next + i);
      submitted++;
    }
    if (with_sync) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data64(sqe, UINT64_MAX);
      submitted++;
    }
    int r = io_uring_submit_and_wait(ring, submitted);
    if (r < 0) return Status::FromErrno(-r, path_ + ": io_uring_submit");
    for (unsigned i = 0; i < submitted; ++i) {
      io_uring_cqe* cqe;
      int w = io_uring_wait_cqe(ring, &cqe);
      if (w < 0) return Status::FromErrno(-w, path_ + ": io_uring_wait_cqe");
      uint64_t tag = io_uring_cqe_get_data64(cqe);
      int res = cqe->res;
      io_uring_cqe_seen(ring, cqe);
      if (res < 0 && res != -ECANCELED && failure.ok()) {
        failure = Status::FromErrno(-res, path_ + (tag == UINT64_MAX ? ": fdatasync" : ": write"));
      }
      if (res > 0 && tag != UINT64_MAX) (*done)[tag] = size_t(res);
    }
    next += batch;
    if (with_sync) break;
  }
  return failure;
}

// One range made durable by the write itself (RWF_DSYNC syncs just that range), in the calling
// thread. The caller waits for it either way, and through io_uring the same write costs more: the
// ring hands a syncing write or an fsync to a kernel worker thread (measured on the development
// VM: ~10 us more per commit than this call, which is as cheap as pwrite + fdatasync).
Status UringFile::WriteDsync(const WriteOp& op, std::vector<size_t>* done) {
  done->assign(1, 0);
  while (true) {
    iovec iov{const_cast<std::byte*>(op.data.data()), op.data.size()};
    ssize_t n = ::pwritev2(fd_, &iov, 1, off_t(op.offset), RWF_DSYNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": write (RWF_DSYNC)");
    (*done)[0] = size_t(n);
    return Status::Ok();
  }
}

Status UringFile::Write(std::span<const WriteOp> ops, bool sync) {
  // Direct I/O needs aligned memory; copy into bounce buffers when the caller's is not.
  std::vector<std::unique_ptr<AlignedBuffer>> bounce;
  std::vector<WriteOp> copy;
  if (direct_) {
    for (const WriteOp& op : ops) {
      if (op.offset % kDirectAlignment || op.data.size() % kDirectAlignment) {
        return Status::InvalidArgument(path_ + ": unaligned direct write");
      }
      if (reinterpret_cast<uintptr_t>(op.data.data()) % kDirectAlignment == 0) {
        copy.push_back(op);
        continue;
      }
      bounce.push_back(std::make_unique<AlignedBuffer>(op.data.size()));
      std::memcpy(bounce.back()->data, op.data.data(), op.data.size());
      copy.push_back({op.offset, {bounce.back()->data, op.data.size()}});
    }
    ops = copy;
  }
  std::vector<size_t> done;
  Status s = ops.size() == 1 && sync ? WriteDsync(ops[0], &done) : WriteOnce(ops, sync, &done);
  if (!s.ok()) return s;
  // A short write cancels the rest of the chain; finish what is missing and sync again.
  bool redo = false;
  for (size_t i = 0; i < ops.size(); ++i) {
    while (done[i] < ops[i].data.size()) {
      redo = true;
      ssize_t n = ::pwrite(fd_, ops[i].data.data() + done[i], ops[i].data.size() - done[i],
                           off_t(ops[i].offset + done[i]));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::FromErrno(n < 0 ? errno : EIO, path_ + ": write");
      done[i] += size_t(n);
    }
  }
  if (redo && sync && ::fdatasync(fd_) != 0) return Status::FromErrno(errno, path_ + ": fdatasync");
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Storage>> OpenUringStorage(const std::string& dir,
                                                  const UringStorageOptions& options) {
  auto storage = std::make_unique<UringStorage>(dir, options);
  KTMFS_RETURN_IF_ERROR(storage->Init());
  return std::unique_ptr<Storage>(std::move(storage));
}

}  // namespace ktmfs::log

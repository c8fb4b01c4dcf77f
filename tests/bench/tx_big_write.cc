#include "tests/bench/tx_big_write.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "ktmfs.h"

namespace ktmfs::bench {
namespace {

using Clock = std::chrono::steady_clock;

std::string ErrnoMessage(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

std::vector<char> Pattern(size_t size, const char* text) {
  std::vector<char> chunk(size);
  size_t n = std::strlen(text);
  for (size_t i = 0; i < size; ++i)
    chunk[i] = text[i % n];
  return chunk;
}

// Writes [from, bytes) chunk after chunk.
std::string WriteChunks(int fd, const std::vector<char>& chunk, uint64_t bytes,
                        const std::string& path, uint64_t from = 0) {
  for (uint64_t off = from; off < bytes;) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - off));
    ssize_t n = pwrite(fd, chunk.data(), len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoMessage("write " + path + " at " + std::to_string(off), errno);
    off += static_cast<uint64_t>(n);
  }
  return "";
}

std::string FsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoMessage("open " + path, errno);
  std::string error = fsync(fd) == 0 ? "" : ErrnoMessage("fsync " + path, errno);
  close(fd);
  return error;
}

// The old content of an existing file: made durable before timing starts, and outside any
// transaction on ktmfs.
std::string MakeExisting(const BigWrite& w, const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoMessage("create " + path, errno);
  std::string error = WriteChunks(fd, Pattern(w.chunk, "old content\n"), w.bytes, path);
  if (error.empty() && fsync(fd) != 0) error = ErrnoMessage("fsync " + path, errno);
  close(fd);
  return error.empty() ? FsyncPath(w.dir) : error;
}

// Before the commit, a thread outside the transaction must still see the old state (no file,
// or the old content), so the row cannot be fast by writing outside any transaction.
std::string CheckOutside(const BigWrite& w, const std::string& path) {
  std::string error;
  std::thread([&] {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno != ENOENT || w.existing) error = ErrnoMessage("open " + path + " outside", errno);
      return;
    }
    std::vector<char> want = Pattern(64, "old content\n"), got(want.size());
    if (!w.existing || pread(fd, got.data(), got.size(), 0) != static_cast<ssize_t>(got.size()) ||
        got != want) {
      error = "a thread outside the transaction sees " + path + " change before the commit";
    }
    close(fd);
  }).join();
  return error;
}

// The timed part, from begin (ktmfs) or open (native) to durable.
std::string WriteDurably(const BigWrite& w, const std::string& path,
                         const std::vector<char>& chunk) {
  int dirfd = open(w.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return ErrnoMessage("open " + w.dir, errno);
  char id[KTMFS_ID_SIZE] = {};
  std::string error;
  if (w.ktmfs) {
    int rc = ktmfs_begin(dirfd, KTMFS_SCOPE_THREAD, 0, 0, "tx_bench big write", id);
    if (rc < 0) error = ErrnoMessage("begin a transaction in " + w.dir, -rc);
  }
  if (error.empty()) {
    int flags = O_WRONLY | O_CLOEXEC | (w.existing ? 0 : O_CREAT | O_EXCL);
    int fd = open(path.c_str(), flags, 0644);
    if (fd < 0) {
      error = ErrnoMessage("open " + path, errno);
    } else {
      error = WriteChunks(fd, chunk, w.bytes, path, w.existing ? w.from : 0);
      if (error.empty() && !w.ktmfs && fsync(fd) != 0) error = ErrnoMessage("fsync " + path, errno);
      if (close(fd) != 0 && error.empty()) error = ErrnoMessage("close " + path, errno);
    }
  }
  if (error.empty() && w.ktmfs) error = CheckOutside(w, path);
  if (w.ktmfs && id[0] != '\0') {
    if (error.empty() && w.probe) w.probe->Start();
    int rc = error.empty() ? ktmfs_commit(dirfd, id) : ktmfs_rollback(dirfd, id);
    if (rc < 0 && error.empty()) error = ErrnoMessage(std::string("commit transaction ") + id, -rc);
    if (w.probe) {
      std::string probe_error = w.probe->Stop();
      if (error.empty()) error = probe_error;
    }
  } else if (error.empty() && !w.existing && fsync(dirfd) != 0) {
    error = ErrnoMessage("fsync " + w.dir, errno);
  }
  close(dirfd);
  return error;
}

// After the commit, anyone sees the whole new content: the size and the first and last chunks.
std::string Check(const BigWrite& w, const std::string& path, const std::vector<char>& chunk) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoMessage("open " + path + " after the write", errno);
  std::string error;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    error = ErrnoMessage("stat " + path, errno);
  } else if (static_cast<uint64_t>(st.st_size) != w.bytes) {
    error = path + " has " + std::to_string(st.st_size) + " bytes after the write, not " +
            std::to_string(w.bytes);
  }
  const uint64_t from = w.existing ? w.from : 0;
  const uint64_t written = w.bytes - from;
  uint64_t last = from + (written > chunk.size() ? (written - 1) / chunk.size() * chunk.size() : 0);
  for (uint64_t off : {from, last}) {
    if (!error.empty()) break;
    size_t len = static_cast<size_t>(std::min<uint64_t>(chunk.size(), w.bytes - off));
    std::vector<char> got(len);
    ssize_t n = pread(fd, got.data(), len, static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(len) || std::memcmp(got.data(), chunk.data(), len) != 0) {
      error = path + " does not hold the new content at offset " + std::to_string(off);
    }
  }
  close(fd);
  return error;
}

}  // namespace

std::string BigWritePath(const BigWrite& w) {
  return w.dir + "/big";
}

std::string TimeBigWrite(const BigWrite& w, double* seconds) {
  std::string path = BigWritePath(w);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoMessage("unlink " + path, errno);
  std::string error = w.existing ? MakeExisting(w, path) : "";
  if (!error.empty()) return error;
  std::vector<char> chunk = Pattern(w.chunk, "new content\n");
  sync();  // start without anyone's dirty pages pending
  Clock::time_point start = Clock::now();
  error = WriteDurably(w, path, chunk);
  *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (error.empty()) error = Check(w, path, chunk);
  if (unlink(path.c_str()) != 0 && error.empty()) error = ErrnoMessage("unlink " + path, errno);
  sync();
  return error;
}

}  // namespace ktmfs::bench

#include "tests/bench/tx_reader_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "ktmfs.h"

namespace ktmfs::bench {

void ReaderProbe::Start() {
  stop_ = false;
  worst_ms_ = 0;
  rounds_ = 0;
  error_.clear();
  ready_ = false;
  thread_ = std::thread([this] { Run(); });
  // The first round finds the file cold and is not counted: it must be over before what is
  // measured begins, or a wait inside it would go unseen.
  std::unique_lock l(ready_mu_);
  ready_cv_.wait(l, [this] { return ready_; });
}

void ReaderProbe::Ready() {
  std::lock_guard l(ready_mu_);
  ready_ = true;
  ready_cv_.notify_all();
}

std::string ReaderProbe::Stop() {
  if (!thread_.joinable()) return error_;
  stop_ = true;
  thread_.join();
  if (error_.empty() && rounds_ < 2) error_ = "the reader of " + path_ + " never finished a round";
  return error_;
}

void ReaderProbe::Run() {
  char buf[4096];
  int dirfd = -1;
  char id[KTMFS_ID_SIZE] = {};
  if (!tx_dir_.empty()) {
    dirfd = open(tx_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc =
        dirfd < 0 ? -errno : ktmfs_begin(dirfd, KTMFS_SCOPE_THREAD, 0, 0, "tx_bench reader", id);
    if (rc < 0) {
      error_ = "begin a transaction for the reader in " + tx_dir_ + ": " + std::strerror(-rc);
      if (dirfd >= 0) close(dirfd);
      Ready();
      return;
    }
  }
  Rounds(buf, sizeof buf);
  Ready();  // if a round failed before the first was over
  if (dirfd >= 0) {
    (void)ktmfs_rollback(dirfd, id);
    close(dirfd);
  }
}

void ReaderProbe::Rounds(char* buf, size_t size) {
  // At least two rounds, however soon the probe is stopped.
  do {
    auto start = std::chrono::steady_clock::now();
    struct stat st;
    if (stat(path_.c_str(), &st) != 0) {
      error_ = "stat " + path_ + ": " + std::strerror(errno);
      return;
    }
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      error_ = "open " + path_ + ": " + std::strerror(errno);
      return;
    }
    ssize_t n = pread(fd, buf, size, 0);
    int err = errno;
    close(fd);
    if (n != static_cast<ssize_t>(size)) {
      error_ = "read " + path_ + ": " + (n < 0 ? std::strerror(err) : "short read");
      return;
    }
    std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    // The first round finds the file cold (its node, its open's first passthrough setup).
    if (rounds_ > 0) worst_ms_ = std::max(worst_ms_, took.count());
    if (rounds_++ == 0) Ready();
  } while (rounds_ < 2 || !stop_.load(std::memory_order_relaxed));
}

}  // namespace ktmfs::bench

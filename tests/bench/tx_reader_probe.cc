#include "tests/bench/tx_reader_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace ktmfs::bench {

void ReaderProbe::Start() {
  stop_ = false;
  worst_ms_ = 0;
  rounds_ = 0;
  error_.clear();
  thread_ = std::thread([this] { Run(); });
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
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    int err = errno;
    close(fd);
    if (n != static_cast<ssize_t>(sizeof buf)) {
      error_ = "read " + path_ + ": " + (n < 0 ? std::strerror(err) : "short read");
      return;
    }
    std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    // The first round finds the file cold (its node, its open's first passthrough setup).
    if (rounds_ > 0) worst_ms_ = std::max(worst_ms_, took.count());
    rounds_++;
  } while (rounds_ < 2 || !stop_.load(std::memory_order_relaxed));
}

}  // namespace ktmfs::bench

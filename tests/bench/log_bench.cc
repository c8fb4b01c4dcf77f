// Group commit benchmark: N committers each append a record and wait until it is durable, on
// the log (io_uring, group commit) and, side by side in the same run and directory, on the
// baseline of each committer doing pwrite + fdatasync itself. Prints records/s, syncs and ratios.
//   log_bench [DIR] [--seconds S] [--rounds R] [--inflight N] [--direct]
// DIR defaults to a new directory under /var/tmp; it is removed afterwards. Each cell runs the
// log and the baseline alternately in R rounds of S/R seconds each, so a change in machine load
// hits both alike.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "log/io.h"
#include "log/log.h"

using namespace ktmfs;
using namespace ktmfs::log;
using Clock = std::chrono::steady_clock;

namespace {

struct Tally {
  uint64_t records = 0;
  uint64_t syncs = 0;
  double seconds = 0;
  double rate() const { return seconds > 0 ? double(records) / seconds : 0; }
};

// Runs `body(thread, stop)` on n threads for `seconds`; body returns the records it committed.
template <typename Body>
void RunThreads(int n, double seconds, Body body, Tally* tally) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] { total += body(t, stop); });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads)
    th.join();
  tally->seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  tally->records += total;
}

class LogTarget {
 public:
  Status Open(const std::string& dir, bool direct, uint32_t inflight) {
    std::filesystem::remove_all(dir);
    UringStorageOptions so;
    so.direct_io = direct;
    auto storage = OpenUringStorage(dir, so);
    if (!storage.ok()) return storage.status();
    storage_ = std::move(*storage);
    LogOptions opts;
    opts.container_size = 16 << 20;
    opts.initial_containers = 4;
    opts.max_containers = 8;
    opts.max_inflight_flushes = inflight;
    auto log = Log::Open(storage_.get(), opts);
    if (!log.ok()) return log.status();
    log_ = std::move(*log);
    auto stream = log_->OpenStream("bench");
    if (!stream.ok()) return stream.status();
    stream_ = *stream;
    return Status::Ok();
  }

  Status Run(size_t record, int committers, double seconds, Tally* tally) {
    std::vector<std::byte> payload(record, std::byte{0x5a});
    std::mutex mu;
    Status error;
    const uint64_t syncs0 = log_->stats().syncs;
    RunThreads(
        committers, seconds,
        [&](int, std::atomic<bool>& stop) {
          uint64_t n = 0;
          while (!stop) {
            auto lsn = stream_->Append({.type = 1, .payload = payload});
            Status st = lsn.ok() ? stream_->Flush(*lsn) : lsn.status();
            if (!st.ok()) {
              std::lock_guard lock(mu);
              error = st;
              stop = true;
              break;
            }
            // Nothing is kept: let the ring reuse its space.
            (void)stream_->SetBaseLsn(*lsn);
            n++;
          }
          return n;
        },
        tally);
    tally->syncs += log_->stats().syncs - syncs0;
    return error;
  }

  void Close() {
    if (log_) (void)log_->Close();
    log_.reset();
    storage_.reset();
  }

 private:
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<Log> log_;
  Stream* stream_ = nullptr;
};

class BaselineTarget {
 public:
  static constexpr uint64_t kSize = 64ull << 20;

  Status Open(const std::string& dir) {
    std::filesystem::create_directories(dir);
    path_ = dir + "/baseline";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return Status::Error(errno, path_ + ": open");
    // Preallocated like the log's containers (zero-filled), so both overwrite in place.
    std::vector<char> zeros(1 << 20, 0);
    for (uint64_t at = 0; at < kSize; at += zeros.size()) {
      if (::pwrite(fd_, zeros.data(), zeros.size(), off_t(at)) != ssize_t(zeros.size())) {
        return Status::Error(errno, path_ + ": zero-fill");
      }
    }
    if (::fsync(fd_) != 0) return Status::Error(errno, path_ + ": fsync");
    return Status::Ok();
  }

  Status Run(size_t record, int committers, double seconds, Tally* tally) {
    std::vector<char> payload(record, 0x5a);
    std::atomic<bool> failed{false};
    RunThreads(
        committers, seconds,
        [&](int, std::atomic<bool>& stop) {
          uint64_t n = 0;
          while (!stop && !failed) {
            uint64_t off = next_.fetch_add(record) % (kSize - record);
            if (::pwrite(fd_, payload.data(), record, off_t(off)) != ssize_t(record) ||
                ::fdatasync(fd_) != 0) {
              failed = true;
              break;
            }
            n++;
          }
          return n;
        },
        tally);
    tally->syncs = tally->records;
    return failed ? Status::IoError(path_ + ": pwrite/fdatasync failed") : Status::Ok();
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    std::filesystem::remove(path_);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::atomic<uint64_t> next_{0};
};

// Recovery speed: open (the scan to the tail) and read everything back, after writing `bytes`.
void BenchRecovery(const std::string& dir, uint64_t bytes, bool direct) {
  std::filesystem::remove_all(dir);
  UringStorageOptions so;
  so.direct_io = direct;
  LogOptions opts;
  opts.container_size = 16 << 20;
  opts.initial_containers = 2;
  opts.max_containers = 64;
  std::vector<std::byte> payload(4000, std::byte{0x33});
  uint64_t records = 0;
  {
    auto storage = OpenUringStorage(dir, so);
    if (!storage.ok()) return;
    auto log = Log::Open(storage->get(), opts);
    if (!log.ok()) return;
    auto s = (*log)->OpenStream("r");
    if (!s.ok()) return;
    for (uint64_t done = 0; done < bytes; done += payload.size()) {
      auto lsn = (*s)->Append({.type = 1, .payload = payload});
      if (!lsn.ok()) break;
      records++;
      if (records % 256 == 0) (void)(*s)->Flush(*lsn);
    }
    (void)(*log)->Close();
  }
  // Cold-ish: drop this directory's pages from the cache is not possible without privileges
  // everywhere, so this measures the log's own cost over cached reads.
  auto t0 = Clock::now();
  auto storage = OpenUringStorage(dir, so);
  if (!storage.ok()) return;
  auto log = Log::Open(storage->get(), opts, false);
  if (!log.ok()) return;
  double open_s = std::chrono::duration<double>(Clock::now() - t0).count();
  t0 = Clock::now();
  auto cursor = (*log)->ReadAll(kInvalidLsn);
  Record r;
  uint64_t n = 0;
  while (true) {
    auto more = cursor->Next(&r);
    if (!more.ok() || !*more) break;
    n++;
  }
  double read_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "recovery of %.0f MiB (%llu records of 4000 B): open (tail scan) %.3f s = %.0f MiB/s, "
      "ReadAll %.3f s = %.0f MiB/s%s\n",
      double(bytes) / (1 << 20), (unsigned long long)n, open_s, double(bytes) / (1 << 20) / open_s,
      read_s, double(bytes) / (1 << 20) / read_s, n == records ? "" : " (RECORD COUNT MISMATCH)");
  std::filesystem::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 1.5;
  int rounds = 3;
  bool direct = false;
  uint32_t inflight = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--inflight" && i + 1 < argc) {
      inflight = uint32_t(std::atoi(argv[++i]));
    } else if (a == "--direct") {
      direct = true;
    } else if (a.starts_with("-")) {
      std::fprintf(stderr, "usage: %s [DIR] [--seconds S] [--rounds R] [--inflight N] [--direct]\n",
                   argv[0]);
      return 2;
    } else {
      dir = a;
    }
  }
  bool made = false;
  if (dir.empty()) {
    char tmpl[] = "/var/tmp/ktmfs-log-bench.XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
    made = true;
  }
  std::printf("log group commit vs pwrite+fdatasync per commit, in %s, %.1f s per cell%s\n",
              dir.c_str(), seconds, direct ? ", O_DIRECT" : "");
  std::printf("%7s %4s | %10s %8s | %10s %8s | %8s %9s\n", "record", "thr", "log rec/s", "syncs",
              "base rec/s", "syncs", "speedup", "syncs/rec");
  int failures = 0;
  double worst16 = 1e9, worst1 = 1e9;
  for (size_t record : {size_t(128), size_t(4096), size_t(65536)}) {
    LogTarget log;
    BaselineTarget base;
    Status s = log.Open(dir + "/log", direct, inflight);
    if (s.ok()) s = base.Open(dir + "/baseline");
    if (!s.ok()) {
      std::fprintf(stderr, "setup: %s\n", s.ToString().c_str());
      return 1;
    }
    for (int committers : {1, 4, 16, 64}) {
      Tally l, b;
      for (int r = 0; r < rounds && s.ok(); ++r) {
        s = log.Run(record, committers, seconds / rounds, &l);
        if (s.ok()) s = base.Run(record, committers, seconds / rounds, &b);
      }
      if (!s.ok()) {
        std::printf("%7zu %4d | error: %s\n", record, committers, s.ToString().c_str());
        failures++;
        s = Status::Ok();
        continue;
      }
      std::printf("%7zu %4d | %10.0f %8llu | %10.0f %8llu | %7.2fx %9.3f\n", record, committers,
                  l.rate(), (unsigned long long)l.syncs, b.rate(), (unsigned long long)b.syncs,
                  l.rate() / b.rate(), l.records ? double(l.syncs) / double(l.records) : 0.0);
      std::fflush(stdout);
      if (committers == 16) worst16 = std::min(worst16, l.rate() / b.rate());
      if (committers == 1) worst1 = std::min(worst1, l.rate() / b.rate());
    }
    log.Close();
    base.Close();
  }
  BenchRecovery(dir + "/recovery", 256ull << 20, direct);
  std::printf(
      "lowest speedup at 16 committers: %.2fx (target 5x); at 1 committer: %.2fx "
      "(target 1x)\n",
      worst16, worst1);
  if (made) std::filesystem::remove_all(dir);
  return failures ? 1 : 0;
}

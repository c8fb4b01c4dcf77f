// Group commit benchmark: N committers each append a record and wait until it is durable, on
// the log (io_uring, group commit) and, side by side in the same run and directory, on the
// baseline of each committer doing pwrite + fdatasync itself. Prints records/s, syncs and ratios.
//   log_bench [DIR] [--seconds S] [--rounds R] [--reps N] [--warmup S] [--records B,B..]
//             [--threads N,N..] [--inflight N] [--buffered] [--no-recovery]
// DIR defaults to a new directory under /var/tmp; it is removed afterwards. Both sides use files
// of the same size, zero-filled in advance, in the same directory. Each cell first warms both up,
// then runs N repetitions; in each, the log and the baseline alternate in R rounds of S/R seconds,
// so a change in machine load hits both alike, and the repetition's speedup is the ratio of the
// two. The table shows medians over the repetitions and the range of the speedup.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
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
  double cpu_seconds = 0;    // user + system time of the whole process while it ran
  double flush_seconds = 0;  // the log's time in its flushes' writes and syncs
  double rate() const { return seconds > 0 ? double(records) / seconds : 0; }
  double cpu_us_per_record() const { return records ? cpu_seconds * 1e6 / double(records) : 0; }
};

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// Runs `body(thread, stop)` on n threads for `seconds`; body returns the records it committed.
template <typename Body>
void RunThreads(int n, double seconds, Body body, Tally* tally) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  const double cpu0 = CpuSeconds();
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] { total += body(t, stop); });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads)
    th.join();
  tally->seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  tally->cpu_seconds += CpuSeconds() - cpu0;
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
    const uint64_t nanos0 = log_->stats().flush_nanos;
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
    tally->flush_seconds += double(log_->stats().flush_nanos - nanos0) / 1e9;
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
            // Records side by side, like the log's; wraps to the start of the file.
            uint64_t off = next_.fetch_add(1) % (kSize / record) * record;
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

// "1,4,16" -> {1, 4, 16}
std::vector<long> ParseList(const char* text) {
  std::vector<long> out;
  for (const char* p = text; *p;) {
    char* end;
    out.push_back(std::strtol(p, &end, 10));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p) break;
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty()      ? 0
         : v.size() % 2 ? v[v.size() / 2]
                        : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 1.5;
  int rounds = 3;
  int reps = 3;
  double warmup = 0.3;
  bool direct = true;  // as the daemon opens its log
  bool recovery = true;
  uint32_t inflight = 1;
  std::vector<long> records = {128, 4096, 65536};
  std::vector<long> threads = {1, 4, 16, 64};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--warmup" && i + 1 < argc) {
      warmup = std::atof(argv[++i]);
    } else if (a == "--inflight" && i + 1 < argc) {
      inflight = uint32_t(std::atoi(argv[++i]));
    } else if (a == "--records" && i + 1 < argc) {
      records = ParseList(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      threads = ParseList(argv[++i]);
    } else if (a == "--no-recovery") {
      recovery = false;
    } else if (a == "--buffered") {
      direct = false;
    } else if (a.starts_with("-")) {
      std::fprintf(stderr,
                   "usage: %s [DIR] [--seconds S] [--rounds R] [--reps N] [--warmup S] "
                   "[--records B,B..] [--threads N,N..] [--inflight N] [--buffered] "
                   "[--no-recovery]\n",
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
  std::printf(
      "log group commit vs pwrite+fdatasync per commit, in %s%s\n"
      "each cell: %d repetitions of %.1f s (log and baseline alternating in %d rounds, after "
      "%.1f s of warm-up each); rates and speedup are medians, range is the lowest and highest "
      "repetition's speedup; us/sync is the log's time per write+sync, gap us the time per sync "
      "spent outside writes and syncs (with one flush in flight: the device idle while the next "
      "group gathers), cpu us the process's CPU time per record\n",
      dir.c_str(), direct ? ", O_DIRECT" : ", buffered", reps, seconds, rounds, warmup);
  std::printf("%7s %4s | %10s %9s %7s %7s %7s | %10s %7s | %8s %15s\n", "record", "thr",
              "log rec/s", "syncs/rec", "us/sync", "gap us", "cpu us", "base rec/s", "cpu us",
              "speedup", "range");
  int failures = 0;
  double worst16 = 1e9, worst1 = 1e9;
  for (long record : records) {
    LogTarget log;
    BaselineTarget base;
    Status s = log.Open(dir + "/log", direct, inflight);
    if (s.ok()) s = base.Open(dir + "/baseline");
    if (!s.ok()) {
      std::fprintf(stderr, "setup: %s\n", s.ToString().c_str());
      return 1;
    }
    for (long committers : threads) {
      std::vector<double> log_rates, base_rates, ratios, syncs_per_rec, log_cpu, base_cpu, sync_us,
          gap_us;
      // Warm-up: the first syncs after preallocation, thread start-up and the log's first
      // buffers are not what either side sustains.
      if (warmup > 0) {
        Tally wl, wb;
        s = log.Run(size_t(record), int(committers), warmup, &wl);
        if (s.ok()) s = base.Run(size_t(record), int(committers), warmup, &wb);
      }
      for (int rep = 0; rep < reps && s.ok(); ++rep) {
        Tally l, b;
        for (int r = 0; r < rounds && s.ok(); ++r) {
          s = log.Run(size_t(record), int(committers), seconds / rounds, &l);
          if (s.ok()) s = base.Run(size_t(record), int(committers), seconds / rounds, &b);
        }
        log_rates.push_back(l.rate());
        base_rates.push_back(b.rate());
        ratios.push_back(b.rate() > 0 ? l.rate() / b.rate() : 0);
        syncs_per_rec.push_back(l.records ? double(l.syncs) / double(l.records) : 0.0);
        log_cpu.push_back(l.cpu_us_per_record());
        sync_us.push_back(l.syncs ? l.flush_seconds * 1e6 / double(l.syncs) : 0.0);
        gap_us.push_back(l.syncs ? (l.seconds - l.flush_seconds) * 1e6 / double(l.syncs) : 0.0);
        base_cpu.push_back(b.cpu_us_per_record());
      }
      if (!s.ok()) {
        std::printf("%7ld %4ld | error: %s\n", record, committers, s.ToString().c_str());
        failures++;
        s = Status::Ok();
        continue;
      }
      const double ratio = Median(ratios);
      char range[32];
      std::snprintf(range, sizeof range, "%.2f-%.2fx",
                    *std::min_element(ratios.begin(), ratios.end()),
                    *std::max_element(ratios.begin(), ratios.end()));
      std::printf("%7ld %4ld | %10.0f %9.3f %7.0f %7.0f %7.1f | %10.0f %7.1f | %7.2fx %15s\n",
                  record, committers, Median(log_rates), Median(syncs_per_rec), Median(sync_us),
                  Median(gap_us), Median(log_cpu), Median(base_rates), Median(base_cpu), ratio,
                  range);
      std::fflush(stdout);
      if (committers == 16) worst16 = std::min(worst16, ratio);
      if (committers == 1) worst1 = std::min(worst1, ratio);
    }
    log.Close();
    base.Close();
  }
  if (recovery) BenchRecovery(dir + "/recovery", 256ull << 20, direct);
  // A row that was not run has no speedup to show.
  auto shown = [](double worst) {
    char text[32];
    if (worst > 1e8) return std::string("not run");
    std::snprintf(text, sizeof text, "%.2fx", worst);
    return std::string(text);
  };
  std::printf(
      "lowest median speedup at 16 committers: %s (target 5x); at 1 committer: %s "
      "(target 1x)\n",
      shown(worst16).c_str(), shown(worst1).c_str());
  if (made) std::filesystem::remove_all(dir);
  return failures ? 1 : 0;
}

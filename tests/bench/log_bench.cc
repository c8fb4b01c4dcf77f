// Group commit benchmark: N committers each append a record and wait until it is durable, on
// the log (io_uring, group commit) and, side by side in the same run and directory, on the
// baseline of each committer doing pwrite + fdatasync itself. Prints records/s, syncs and ratios.
//   log_bench [DIR] [--seconds S] [--direct]
// DIR defaults to a new directory under /var/tmp; it is removed afterwards.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "log/io.h"
#include "log/log.h"

using namespace ktmfs;
using namespace ktmfs::log;
using Clock = std::chrono::steady_clock;

namespace {

struct Result1 {
  double records_per_s = 0;
  uint64_t records = 0;
  uint64_t syncs = 0;
  bool ok = true;
  std::string error;
};

// Runs `body(thread, &stop)` on n threads for `seconds`; body returns records done.
template <typename Body>
uint64_t RunThreads(int n, double seconds, Body body, double* elapsed) {
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
  *elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  return total;
}

Result1 BenchLog(const std::string& dir, size_t record, int committers, double seconds,
                 bool direct) {
  Result1 out;
  std::filesystem::remove_all(dir);
  UringStorageOptions so;
  so.direct_io = direct;
  auto storage = OpenUringStorage(dir, so);
  if (!storage.ok()) return {0, 0, 0, false, storage.status().ToString()};
  LogOptions opts;
  opts.container_size = 64 << 20;
  opts.initial_containers = 2;
  opts.max_containers = 8;
  auto log = Log::Open(storage->get(), opts);
  if (!log.ok()) return {0, 0, 0, false, log.status().ToString()};
  auto stream = (*log)->OpenStream("bench");
  if (!stream.ok()) return {0, 0, 0, false, stream.status().ToString()};
  Stream* s = *stream;
  std::vector<std::byte> payload(record, std::byte{0x5a});
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_mu;
  double elapsed = 0;
  uint64_t syncs0 = (*log)->stats().syncs;
  out.records = RunThreads(
      committers, seconds,
      [&](int t, std::atomic<bool>& stop) {
        uint64_t n = 0;
        while (!stop && !failed) {
          auto lsn = s->Append({.type = 1, .payload = payload});
          Status st = lsn.ok() ? s->Flush(*lsn) : lsn.status();
          if (st.ok() && t == 0 && n % 16 == 0) (void)s->SetBaseLsn(*lsn);  // keep the ring free
          if (!st.ok()) {
            std::lock_guard lock(error_mu);
            error = st.ToString();
            failed = true;
            break;
          }
          n++;
        }
        return n;
      },
      &elapsed);
  out.syncs = (*log)->stats().syncs - syncs0;
  out.records_per_s = double(out.records) / elapsed;
  if (failed) out.ok = false, out.error = error;
  (void)(*log)->Close();
  return out;
}

Result1 BenchBaseline(const std::string& dir, size_t record, int committers, double seconds) {
  Result1 out;
  std::filesystem::create_directories(dir);
  std::string path = dir + "/baseline";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return {0, 0, 0, false, path + ": " + std::strerror(errno)};
  const uint64_t size = 256ull << 20;
  // Preallocated the same way as the log's containers (zero-filled), so both overwrite.
  std::vector<char> zeros(1 << 20, 0);
  for (uint64_t at = 0; at < size; at += zeros.size()) {
    if (::pwrite(fd, zeros.data(), zeros.size(), off_t(at)) != ssize_t(zeros.size())) {
      ::close(fd);
      return {0, 0, 0, false, path + ": zero-fill: " + std::strerror(errno)};
    }
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return {0, 0, 0, false, path + ": fsync: " + std::strerror(errno)};
  }
  std::vector<char> payload(record, 0x5a);
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  double elapsed = 0;
  out.records = RunThreads(
      committers, seconds,
      [&](int, std::atomic<bool>& stop) {
        uint64_t n = 0;
        while (!stop && !failed) {
          uint64_t off = next.fetch_add(record) % (size - record);
          if (::pwrite(fd, payload.data(), record, off_t(off)) != ssize_t(record) ||
              ::fdatasync(fd) != 0) {
            failed = true;
            break;
          }
          n++;
        }
        return n;
      },
      &elapsed);
  ::close(fd);
  std::filesystem::remove(path);
  out.syncs = out.records;
  out.records_per_s = double(out.records) / elapsed;
  if (failed) out.ok = false, out.error = "pwrite/fdatasync failed";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 1.2;
  bool direct = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--direct") {
      direct = true;
    } else if (a.starts_with("-")) {
      std::fprintf(stderr, "usage: %s [DIR] [--seconds S] [--direct]\n", argv[0]);
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
  std::printf("%8s %6s | %12s %9s | %12s %9s | %7s %8s\n", "record", "thr", "log rec/s",
              "log syncs", "base rec/s", "base sync", "speedup", "sync/rec");
  int failures = 0;
  for (size_t record : {size_t(128), size_t(4096), size_t(65536)}) {
    for (int committers : {1, 4, 16, 64}) {
      Result1 l = BenchLog(dir + "/log", record, committers, seconds, direct);
      Result1 b = BenchBaseline(dir + "/baseline-dir", record, committers, seconds);
      if (!l.ok || !b.ok) {
        std::printf("%8zu %6d | error: %s %s\n", record, committers, l.error.c_str(),
                    b.error.c_str());
        failures++;
        continue;
      }
      std::printf("%8zu %6d | %12.0f %9llu | %12.0f %9llu | %6.2fx %8.3f\n", record, committers,
                  l.records_per_s, (unsigned long long)l.syncs, b.records_per_s,
                  (unsigned long long)b.syncs, l.records_per_s / b.records_per_s,
                  l.records ? double(l.syncs) / double(l.records) : 0.0);
      std::fflush(stdout);
    }
  }
  if (made) std::filesystem::remove_all(dir);
  return failures ? 1 : 0;
}

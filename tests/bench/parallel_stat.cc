// Many clients at once for the passthrough benchmark: THREADS threads each stat their own 64
// small files by path, round and round, for SECONDS; prints the stats per second of all of them.
// With names not cached (ktmfs's default entry_timeout=0) each stat is one LOOKUP round trip,
// so this measures how many requests the daemon's transport serves when callers run in
// parallel.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DIR THREADS SECONDS\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int threads = std::atoi(argv[2]);
  const double seconds = std::atof(argv[3]);
  constexpr int kFiles = 64;
  for (int t = 0; t < threads; t++) {
    std::string d = dir + "/t" + std::to_string(t);
    if (mkdir(d.c_str(), 0755) != 0) {
      std::perror(d.c_str());
      return 1;
    }
    for (int i = 0; i < kFiles; i++) {
      std::string p = d + "/f" + std::to_string(i);
      int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (fd < 0 || close(fd) != 0) {
        std::perror(p.c_str());
        return 1;
      }
    }
  }
  std::atomic<bool> stop{false};
  std::atomic<long> total{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; t++) {
    workers.emplace_back([&, t] {
      std::vector<std::string> paths;
      for (int i = 0; i < kFiles; i++)
        paths.push_back(dir + "/t" + std::to_string(t) + "/f" + std::to_string(i));
      long n = 0;
      struct stat st;
      while (!stop.load(std::memory_order_relaxed)) {
        for (const std::string& p : paths) {
          if (stat(p.c_str(), &st) != 0) {
            std::perror(p.c_str());
            failed = true;
            stop = true;
            break;
          }
          n++;
        }
      }
      total += n;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (std::thread& w : workers)
    w.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (failed) return 1;
  std::printf("%.0f\n", static_cast<double>(total.load()) / elapsed);
  for (int t = 0; t < threads; t++) {
    std::string d = dir + "/t" + std::to_string(t);
    for (int i = 0; i < kFiles; i++)
      unlink((d + "/f" + std::to_string(i)).c_str());
    rmdir(d.c_str());
  }
  return 0;
}

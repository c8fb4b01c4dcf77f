// Metadata load for the passthrough benchmark: creates, stats and unlinks N small files in a
// directory and prints the seconds each phase took, as "create stat unlink".
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR COUNT\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  int count = std::atoi(argv[2]);
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  char data[100] = {};
  auto t0 = now();
  for (int i = 0; i < count; i++) {
    std::string p = dir + "/f" + std::to_string(i);
    int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, data, sizeof data) != sizeof data || close(fd) != 0) {
      std::perror(p.c_str());
      return 1;
    }
  }
  auto t1 = now();
  for (int i = 0; i < count; i++) {
    struct stat st;
    std::string p = dir + "/f" + std::to_string(i);
    if (stat(p.c_str(), &st) != 0) {
      std::perror(p.c_str());
      return 1;
    }
  }
  auto t2 = now();
  for (int i = 0; i < count; i++) {
    std::string p = dir + "/f" + std::to_string(i);
    if (unlink(p.c_str()) != 0) {
      std::perror(p.c_str());
      return 1;
    }
  }
  auto t3 = now();
  std::printf("%.6f %.6f %.6f\n", secs(t0, t1), secs(t1, t2), secs(t2, t3));
  return 0;
}

// aiodio_cycle FILE SIZE CYCLES READERS: rewrites FILE (SIZE bytes, a multiple of 4096) CYCLES
// times with asynchronous O_DIRECT writes (io_uring), each time with a new byte, while READERS
// threads read it through the page cache, opening it afresh, again and again. After each write
// completes, a buffered read must return the new byte everywhere: pages a reader cached while
// the write was in flight must not outlive it. The scenario of fstests generic/451
// (aio-dio-cycle-write). Prints "ok: CYCLES cycles" or the first stale range, and exits 1 on it;
// exits 3 if io_uring is unavailable here.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void Die(const char* what, int err) {
  std::fprintf(stderr, "aiodio_cycle: %s: %s\n", what, std::strerror(err));
  std::exit(2);
}

// One asynchronous O_DIRECT write of the whole buffer at offset 0, waited for.
void WriteAsync(io_uring* ring, int fd, const char* buf, size_t size) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(size), 0);
  if (int rc = io_uring_submit(ring); rc != 1) Die("io_uring_submit", rc < 0 ? -rc : EIO);
  io_uring_cqe* cqe = nullptr;
  if (int rc = io_uring_wait_cqe(ring, &cqe); rc < 0) Die("io_uring_wait_cqe", -rc);
  int res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  if (res < 0) Die("O_DIRECT write", -res);
  if (static_cast<size_t>(res) != size) Die("short O_DIRECT write", EIO);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: aiodio_cycle FILE SIZE CYCLES READERS\n");
    return 2;
  }
  const char* path = argv[1];
  const size_t size = std::strtoul(argv[2], nullptr, 0);
  const int cycles = std::atoi(argv[3]);
  const int readers = std::atoi(argv[4]);
  if (size == 0 || size % 4096 != 0) Die("SIZE must be a positive multiple of 4096", EINVAL);

  int dfd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (dfd < 0) Die(path, errno);
  void* mem = nullptr;
  if (posix_memalign(&mem, 4096, size) != 0) Die("posix_memalign", ENOMEM);
  char* buf = static_cast<char*>(mem);
  io_uring ring;
  if (int rc = io_uring_queue_init(4, &ring, 0); rc < 0) {
    // Not the filesystem's doing (a seccomp filter, kernel.io_uring_disabled): the caller
    // reports the test as not run.
    std::fprintf(stderr, "aiodio_cycle: io_uring is unavailable: %s\n", std::strerror(-rc));
    return 3;
  }
  std::memset(buf, 'a', size);
  WriteAsync(&ring, dfd, buf, size);

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&] {
      std::vector<char> rb(size);
      while (!stop.load()) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        while (read(fd, rb.data(), rb.size()) > 0) {
        }
        close(fd);
      }
    });
  }

  int bad = 0;
  std::vector<char> check(size);
  for (int c = 1; c <= cycles && bad == 0; ++c) {
    const char want = static_cast<char>('a' + c % 26);
    std::memset(buf, want, size);
    WriteAsync(&ring, dfd, buf, size);
    int fd = open(path, O_RDONLY);
    if (fd < 0) Die(path, errno);
    ssize_t n = pread(fd, check.data(), size, 0);
    close(fd);
    if (n != static_cast<ssize_t>(size)) Die("buffered read", n < 0 ? errno : EIO);
    for (size_t i = 0; i < size; ++i) {
      if (check[i] == want) continue;
      size_t end = i;
      while (end < size && check[end] != want)
        ++end;
      std::printf("cycle %d: bytes %zu-%zu read '%c' after the O_DIRECT write of '%c' completed\n",
                  c, i, end - 1, check[i], want);
      bad = 1;
      break;
    }
  }
  stop = true;
  for (auto& t : threads)
    t.join();
  io_uring_queue_exit(&ring);
  close(dfd);
  free(mem);
  if (bad == 0) std::printf("ok: %d cycles\n", cycles);
  return bad;
}

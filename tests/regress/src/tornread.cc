// tornread FILE COMMITS READERS: the torn-read checker. A writer commits COMMITS transactions,
// each rewriting FILE (on a ktmfs mount) as one generation: a header naming the generation and
// its length, then a filler byte of its own, at a length that grows and shrinks from one
// generation to the next. READERS processes outside any transaction meanwhile open FILE
// afresh, read it with one read(2) and close it, again and again. Every read must be one whole
// generation: the length its header names, and only its filler after the header. A read cut at
// an older length, padded with zeros to it, or mixing two generations' bytes is torn.
//
// Prints "commits: N", "torn reads: T" (with the first torn read described), and whether the
// readers read enough to mean something; exits 1 if any read was torn.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ktmfs.h"

namespace {

constexpr size_t kHeader = 20;  // "G%08u L%08u\n" plus its NUL would be 21; the NUL is not kept
constexpr size_t kMaxLen = 4096 + 61440;

size_t LengthOf(unsigned gen) {
  return 4096 + (static_cast<size_t>(gen) * 7919) % 61440;
}
char FillerOf(unsigned gen) {
  return static_cast<char>('a' + gen % 26);
}

std::string Generation(unsigned gen) {
  const size_t len = LengthOf(gen);
  char head[kHeader + 1];
  std::snprintf(head, sizeof head, "G%08u L%08zu\n", gen, len);
  std::string s(head, kHeader);
  s.resize(len, FillerOf(gen));
  return s;
}

struct Shared {
  std::atomic<bool> stop;
  std::atomic<unsigned long> reads;
  std::atomic<unsigned long> torn;
  char first[256];  // the first torn read, described
  std::atomic<bool> described;
};

// Why `data` is not one whole generation, or "" if it is.
std::string Tear(const char* data, size_t n) {
  unsigned gen = 0;
  size_t len = 0;
  char head[kHeader + 1] = {};
  std::memcpy(head, data, n < kHeader ? n : kHeader);
  if (n < kHeader || std::sscanf(head, "G%8u L%8zu\n", &gen, &len) != 2) {
    return "no header in " + std::to_string(n) + " bytes (first byte " +
           std::to_string(static_cast<unsigned char>(n ? data[0] : 0)) + ")";
  }
  if (len != LengthOf(gen)) return "a header naming the wrong length for its generation";
  if (n != len) {
    return "generation " + std::to_string(gen) + " of " + std::to_string(len) + " bytes read as " +
           std::to_string(n) + " bytes";
  }
  for (size_t i = kHeader; i < n; ++i) {
    if (data[i] != FillerOf(gen)) {
      return "generation " + std::to_string(gen) + ": byte " + std::to_string(i) + " is " +
             std::to_string(static_cast<unsigned char>(data[i])) + ", not its filler";
    }
  }
  return "";
}

void Reader(const char* path, Shared* sh) {
  std::vector<char> buf(kMaxLen + 4096);
  while (!sh->stop.load()) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf.data(), buf.size());
    close(fd);
    if (n < 0) continue;
    sh->reads++;
    std::string why = Tear(buf.data(), static_cast<size_t>(n));
    if (why.empty()) continue;
    sh->torn++;
    bool expected = false;
    if (sh->described.compare_exchange_strong(expected, true))
      std::snprintf(sh->first, sizeof sh->first, "%s", why.c_str());
  }
}

int WriteFile(const char* path, const std::string& data) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, data.data(), data.size());
  int err = n < 0 ? errno : (static_cast<size_t>(n) != data.size() ? EIO : 0);
  if (close(fd) != 0 && err == 0) err = errno;
  return -err;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tornread FILE COMMITS READERS\n");
    return 2;
  }
  const char* path = argv[1];
  const unsigned commits = static_cast<unsigned>(std::atoi(argv[2]));
  const int readers = std::atoi(argv[3]);
  std::string dir(path);
  dir = dir.find('/') == std::string::npos ? "." : dir.substr(0, dir.rfind('/'));
  int dirfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dirfd < 0) {
    std::perror(dir.c_str());
    return 2;
  }
  if (int rc = WriteFile(path, Generation(0)); rc != 0) {
    std::fprintf(stderr, "tornread: %s: %s\n", path, std::strerror(-rc));
    return 2;
  }
  auto* sh = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) return 2;
  new (sh) Shared{};
  std::vector<pid_t> pids;
  for (int r = 0; r < readers; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      Reader(path, sh);
      _exit(0);
    }
    pids.push_back(pid);
  }
  int failed = 0;
  for (unsigned gen = 1; gen <= commits && failed == 0; ++gen) {
    int rc = ktmfs_begin(dirfd, KTMFS_SCOPE_PROCESS, 0, 0, "tornread", nullptr);
    if (rc == 0) rc = WriteFile(path, Generation(gen));
    if (rc == 0) rc = ktmfs_commit(dirfd, nullptr);
    if (rc != 0) {
      std::printf("generation %u: %s\n", gen, std::strerror(-rc));
      failed = 1;
    }
  }
  sh->stop = true;
  for (pid_t pid : pids)
    waitpid(pid, nullptr, 0);
  std::fprintf(stderr, "tornread: %lu reads\n", sh->reads.load());
  std::printf("commits: %u\n", failed ? 0 : commits);
  std::printf("torn reads: %lu%s%s\n", sh->torn.load(), sh->torn ? ", the first: " : "",
              sh->torn ? sh->first : "");
  // Fewer reads than commits would mean the readers hardly overlapped the commits.
  std::printf("readers overlapped the commits: %s\n", sh->reads.load() >= commits ? "yes" : "no");
  return failed || sh->torn != 0 ? 1 : 0;
}

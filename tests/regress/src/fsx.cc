// fsx: a file system exerciser. Applies a seeded random sequence of reads, writes, truncates,
// fallocates (plain, keep-size, punch-hole, zero-range), mmap reads and mmap writes to one file,
// keeps what the file must contain in memory, and checks every read and the file size after
// every operation against it. On a mismatch it prints the seed, the failing operation, the
// operations before it and the first differing bytes, and exits 1.
//
//   fsx [-N ops] [-S seed] [-l max_file_len] [-o max_op_len] [-F] [-M] [-R] FILE
//     -F: no fallocate operations   -M: no mmap operations   -R: no close/reopen operations
//
// Same seed, same sequence: the sequence depends only on its own generator, not on libc.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

struct Options {
  uint64_t ops = 10000;
  uint64_t seed = 1;
  uint64_t max_len = 256 * 1024;
  uint64_t max_op = 64 * 1024;
  bool fallocate = true;
  bool mmap = true;
  bool reopen = true;
  const char* path = nullptr;
};

// splitmix64: small, fast and fully specified, so a seed means the same sequence everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t s_;
};

enum class Kind {
  kRead,
  kWrite,
  kTruncate,
  kFalloc,
  kKeepSize,
  kPunch,
  kZero,
  kMapRead,
  kMapWrite,
  kReopen
};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kRead:
      return "read";
    case Kind::kWrite:
      return "write";
    case Kind::kTruncate:
      return "truncate";
    case Kind::kFalloc:
      return "fallocate";
    case Kind::kKeepSize:
      return "fallocate-keep-size";
    case Kind::kPunch:
      return "punch-hole";
    case Kind::kZero:
      return "zero-range";
    case Kind::kMapRead:
      return "mmap-read";
    case Kind::kMapWrite:
      return "mmap-write";
    case Kind::kReopen:
      return "close-reopen";
  }
  return "?";
}

struct Record {
  uint64_t n;
  Kind kind;
  uint64_t off, len, size_before;
};

class Exerciser {
 public:
  explicit Exerciser(const Options& o) : o_(o), rng_(o.seed) {}

  int Run() {
    fd_ = open(o_.path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd_ < 0) return Fail("open", errno);
    page_ = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (!ProbeFallocate()) return 1;
    for (n_ = 1; n_ <= o_.ops; ++n_) {
      Record r = Pick();
      history_.push_back(r);
      if (history_.size() > 64) history_.pop_front();
      if (!Apply(r)) return 1;
      if (!CheckSize()) return 1;
      if (n_ % 1000 == 0 && !CheckAll()) return 1;
    }
    if (!CheckAll()) return 1;
    close(fd_);
    std::printf("fsx: %" PRIu64 " operations passed\n", o_.ops);
    return 0;
  }

 private:
  // fallocate modes are optional (tmpfs has no zero-range, some filesystems none at all): a mode
  // the filesystem refuses with EOPNOTSUPP is left out of the sequence, and said so on stderr.
  // Its own tests check that a filesystem supports what it should.
  bool ProbeFallocate() {
    if (!o_.fallocate) return true;
    const struct {
      Kind kind;
      int mode;
    } probes[] = {{Kind::kFalloc, 0},
                  {Kind::kKeepSize, FALLOC_FL_KEEP_SIZE},
                  {Kind::kPunch, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE},
                  {Kind::kZero, FALLOC_FL_ZERO_RANGE}};
    for (const auto& p : probes) {
      if (fallocate(fd_, p.mode, 0, 1) < 0) {
        if (errno != EOPNOTSUPP) return Fail("fallocate probe", errno);
        std::fprintf(stderr, "fsx: %s is not supported here; left out\n", KindName(p.kind));
        disabled_[static_cast<int>(p.kind)] = true;
      }
      if (ftruncate(fd_, 0) < 0) return Fail("ftruncate", errno);
    }
    return true;
  }

  Record Pick() {
    static const Kind kAll[] = {Kind::kRead,     Kind::kWrite,   Kind::kWrite,    Kind::kRead,
                                Kind::kTruncate, Kind::kFalloc,  Kind::kKeepSize, Kind::kPunch,
                                Kind::kZero,     Kind::kMapRead, Kind::kMapWrite, Kind::kReopen};
    Kind k;
    for (;;) {
      k = kAll[rng_.Below(sizeof kAll / sizeof kAll[0])];
      bool falloc =
          k == Kind::kFalloc || k == Kind::kKeepSize || k == Kind::kPunch || k == Kind::kZero;
      if (falloc && !o_.fallocate) continue;
      if (disabled_[static_cast<int>(k)]) continue;
      if ((k == Kind::kMapRead || k == Kind::kMapWrite) && !o_.mmap) continue;
      if (k == Kind::kReopen && !o_.reopen) continue;
      break;
    }
    Record r{n_, k, 0, 0, model_.size()};
    if (k == Kind::kTruncate) {
      r.off = rng_.Below(o_.max_len + 1);
    } else {
      r.off = rng_.Below(o_.max_len);
      r.len = 1 + rng_.Below(o_.max_op);
      if (r.off + r.len > o_.max_len) r.len = o_.max_len - r.off;
    }
    return r;
  }

  bool Apply(const Record& r) {
    switch (r.kind) {
      case Kind::kRead:
        return Read(r);
      case Kind::kWrite:
        return Write(r);
      case Kind::kTruncate:
        if (ftruncate(fd_, static_cast<off_t>(r.off)) < 0) return Fail("ftruncate", errno);
        model_.resize(r.off, 0);
        return true;
      case Kind::kFalloc:
        if (fallocate(fd_, 0, static_cast<off_t>(r.off), static_cast<off_t>(r.len)) < 0)
          return Fail("fallocate", errno);
        if (r.off + r.len > model_.size()) model_.resize(r.off + r.len, 0);
        return true;
      case Kind::kKeepSize:
        if (fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(r.off),
                      static_cast<off_t>(r.len)) < 0)
          return Fail("fallocate keep-size", errno);
        return true;
      case Kind::kPunch:
        if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(r.off),
                      static_cast<off_t>(r.len)) < 0)
          return Fail("fallocate punch-hole", errno);
        Zero(r.off, r.len, false);
        return true;
      case Kind::kZero:
        if (fallocate(fd_, FALLOC_FL_ZERO_RANGE, static_cast<off_t>(r.off),
                      static_cast<off_t>(r.len)) < 0)
          return Fail("fallocate zero-range", errno);
        Zero(r.off, r.len, true);
        return true;
      case Kind::kMapRead:
        return MapRead(r);
      case Kind::kMapWrite:
        return MapWrite(r);
      case Kind::kReopen:
        if (close(fd_) < 0) return Fail("close", errno);
        fd_ = open(o_.path, O_RDWR);
        if (fd_ < 0) return Fail("reopen", errno);
        return true;
    }
    return true;
  }

  void Zero(uint64_t off, uint64_t len, bool extend) {
    if (extend && off + len > model_.size()) model_.resize(off + len, 0);
    for (uint64_t i = off; i < off + len && i < model_.size(); ++i)
      model_[i] = 0;
  }

  // The bytes a write puts down: a function of the operation number and offset, so every byte
  // in a failure report says which operation wrote it.
  void Fill(std::vector<char>& buf, uint64_t off) {
    for (uint64_t i = 0; i < buf.size(); ++i) {
      buf[i] = static_cast<char>(((n_ & 0xff) ^ ((off + i) * 7)) | 1);
    }
  }

  bool Write(const Record& r) {
    std::vector<char> buf(r.len);
    Fill(buf, r.off);
    uint64_t done = 0;
    while (done < r.len) {
      ssize_t n = pwrite(fd_, buf.data() + done, r.len - done, static_cast<off_t>(r.off + done));
      if (n <= 0) return Fail("pwrite", n < 0 ? errno : EIO);
      done += static_cast<uint64_t>(n);
    }
    if (r.off + r.len > model_.size()) model_.resize(r.off + r.len, 0);
    std::memcpy(model_.data() + r.off, buf.data(), r.len);
    return true;
  }

  bool Read(const Record& r) {
    if (model_.empty()) return true;
    uint64_t off = r.off % model_.size();
    uint64_t len = std::min<uint64_t>(r.len, model_.size() - off);
    std::vector<char> buf(len);
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = pread(fd_, buf.data() + done, len - done, static_cast<off_t>(off + done));
      if (n < 0) return Fail("pread", errno);
      if (n == 0) return Mismatch("pread returned end of file early", off, buf.data(), done);
      done += static_cast<uint64_t>(n);
    }
    return Compare("pread", off, buf.data(), len);
  }

  bool MapRead(const Record& r) {
    if (model_.empty()) return true;
    uint64_t off = r.off % model_.size();
    uint64_t len = std::min<uint64_t>(r.len, model_.size() - off);
    uint64_t base = off / page_ * page_;
    size_t maplen = static_cast<size_t>(off + len - base);
    void* p = mmap(nullptr, maplen, PROT_READ, MAP_SHARED, fd_, static_cast<off_t>(base));
    if (p == MAP_FAILED) return Fail("mmap read", errno);
    bool ok = Compare("mmap-read", off, static_cast<char*>(p) + (off - base), len);
    munmap(p, maplen);
    return ok;
  }

  bool MapWrite(const Record& r) {
    // A shared mapping cannot grow a file: extend it first, as a program would.
    if (r.off + r.len > model_.size()) {
      if (ftruncate(fd_, static_cast<off_t>(r.off + r.len)) < 0) return Fail("ftruncate", errno);
      model_.resize(r.off + r.len, 0);
    }
    uint64_t base = r.off / page_ * page_;
    size_t maplen = static_cast<size_t>(r.off + r.len - base);
    void* p =
        mmap(nullptr, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, static_cast<off_t>(base));
    if (p == MAP_FAILED) return Fail("mmap write", errno);
    std::vector<char> buf(r.len);
    Fill(buf, r.off);
    std::memcpy(static_cast<char*>(p) + (r.off - base), buf.data(), r.len);
    int rc = msync(p, maplen, MS_SYNC);
    int e = errno;
    munmap(p, maplen);
    if (rc < 0) return Fail("msync", e);
    std::memcpy(model_.data() + r.off, buf.data(), r.len);
    return true;
  }

  bool CheckSize() {
    struct stat st;
    if (fstat(fd_, &st) < 0) return Fail("fstat", errno);
    if (static_cast<uint64_t>(st.st_size) == model_.size()) return true;
    std::printf("fsx: size mismatch: file %lld, expected %zu\n", static_cast<long long>(st.st_size),
                model_.size());
    return Report();
  }

  bool CheckAll() {
    Record whole{n_, Kind::kRead, 0, model_.size(), model_.size()};
    return Read(whole);
  }

  bool Compare(const char* what, uint64_t off, const char* got, uint64_t len) {
    if (std::memcmp(got, model_.data() + off, len) == 0) return true;
    return Mismatch(what, off, got, len);
  }

  bool Mismatch(const char* what, uint64_t off, const char* got, uint64_t len) {
    uint64_t i = 0;
    while (i < len && got[i] == model_[off + i])
      ++i;
    std::printf("fsx: %s mismatch at offset %" PRIu64 " (read of %" PRIu64 "+%" PRIu64 ")\n", what,
                off + i, off, len);
    std::printf("fsx: offset      got expected\n");
    for (uint64_t j = i; j < len && j < i + 16; ++j) {
      std::printf("fsx: %10" PRIu64 "  0x%02x  0x%02x\n", off + j,
                  static_cast<unsigned char>(got[j]), static_cast<unsigned char>(model_[off + j]));
    }
    return Report();
  }

  bool Fail(const char* what, int e) {
    const char* name = strerrorname_np(e);
    std::printf("fsx: %s failed: %s\n", what, name ? name : "unknown errno");
    return Report();
  }

  bool Report() {
    std::printf("fsx: seed %" PRIu64 ", failed at operation %" PRIu64 " of %" PRIu64
                "; the last operations were:\n",
                o_.seed, n_, o_.ops);
    for (const auto& r : history_) {
      std::printf("fsx: %8" PRIu64 " %-20s off %8" PRIu64 " len %7" PRIu64 " (size before %" PRIu64
                  ")\n",
                  r.n, KindName(r.kind), r.off, r.len, r.size_before);
    }
    std::printf("fsx: replay with: fsx -S %" PRIu64 " -N %" PRIu64 " -l %" PRIu64 " -o %" PRIu64
                "%s%s%s FILE\n",
                o_.seed, n_, o_.max_len, o_.max_op, o_.fallocate ? "" : " -F", o_.mmap ? "" : " -M",
                o_.reopen ? "" : " -R");
    return false;
  }

  Options o_;
  Rng rng_;
  int fd_ = -1;
  uint64_t n_ = 0;
  uint64_t page_ = 4096;
  std::vector<char> model_;
  std::deque<Record> history_;
  bool disabled_[static_cast<int>(Kind::kReopen) + 1] = {};
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: fsx [-N ops] [-S seed] [-l max_file_len] [-o max_op_len] [-F] [-M] [-R] "
               "FILE\n");
  std::exit(2);
}

uint64_t Num(const char* s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 0);
  if (errno != 0 || *end != '\0') Usage();
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Options o;
  int c;
  while ((c = getopt(argc, argv, "N:S:l:o:FMR")) != -1) {
    switch (c) {
      case 'N':
        o.ops = Num(optarg);
        break;
      case 'S':
        o.seed = Num(optarg);
        break;
      case 'l':
        o.max_len = Num(optarg);
        break;
      case 'o':
        o.max_op = Num(optarg);
        break;
      case 'F':
        o.fallocate = false;
        break;
      case 'M':
        o.mmap = false;
        break;
      case 'R':
        o.reopen = false;
        break;
      default:
        Usage();
    }
  }
  if (optind != argc - 1 || o.max_len == 0 || o.max_op == 0) Usage();
  o.path = argv[optind];
  return Exerciser(o).Run();
}

#include "fs/tx/direct_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

std::string Slurp(int fd) {
  std::string out;
  char buf[1 << 16];
  for (off_t pos = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, pos);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    pos += n;
  }
  return out;
}

// What writing `data` at `offset` over `before` must give.
std::string Overlay(std::string before, const std::string& data, uint64_t offset) {
  if (before.size() < offset + data.size()) before.resize(offset + data.size(), '\0');
  before.replace(offset, data.size(), data);
  return before;
}

class DirectIoTest : public ::testing::Test {
 protected:
  TempDir tmp;

  // Whether the filesystem under the test directory takes O_DIRECT; the direct variants of
  // the tests need it (the ordinary ones run anyway), and say so when they cannot run.
  bool DirectSupported() {
    int fd = Create("probe", "");
    int dfd = ReopenDirect(fd, O_WRONLY | O_CLOEXEC);
    ::close(fd);
    if (dfd < 0) {
      std::printf("direct variants not run: %s refuses O_DIRECT\n", tmp.path().c_str());
      return false;
    }
    ::close(dfd);
    return true;
  }
  int Create(const std::string& name, const std::string& content) {
    int fd =
        ::open((tmp.path() + "/" + name).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << name;
    EXPECT_EQ(::pwrite(fd, content.data(), content.size(), 0),
              static_cast<ssize_t>(content.size()));
    return fd;
  }
};

// Offsets and lengths aligned and not, memory aligned and not (a span starting one byte into
// an aligned buffer), ranges bigger than one bounce chunk; with the direct descriptor and
// without (as on a filesystem that refuses O_DIRECT).
TEST_F(DirectIoTest, WriteAtGivesTheBytesOfAPlainWrite) {
  const std::string old = Pattern(3 * kDirectAlign + 100, 'a');
  const std::string big = Pattern((5 << 20) + 4 * kDirectAlign + 1, 'K');
  struct Case {
    uint64_t offset;
    size_t length;
    size_t memory_skew;
  };
  const Case cases[] = {
      {0, 3 * kDirectAlign, 0},
      {0, 3 * kDirectAlign, 1},
      {100, 2 * kDirectAlign, 0},
      {kDirectAlign, kDirectAlign + 7, 0},
      {5, 10, 0},
      {2 * kDirectAlign + 1, big.size() - 1, 0},
      {0, big.size() - 1, 1},
      {4 * kDirectAlign, (5 << 20), 0},
      {kDirectAlign - 1, kDirectAlign + 2, 3},
  };
  const bool direct_ok = DirectSupported();
  for (bool direct : {true, false}) {
    if (direct && !direct_ok) continue;
    for (const Case& c : cases) {
      SCOPED_TRACE("direct=" + std::to_string(direct) + " offset=" + std::to_string(c.offset) +
                   " length=" + std::to_string(c.length) +
                   " skew=" + std::to_string(c.memory_skew));
      int fd = Create("f", old);
      int dfd = direct ? ReopenDirect(fd, O_WRONLY | O_CLOEXEC) : -1;
      if (direct) {
        ASSERT_GE(dfd, 0) << "O_DIRECT refused under " << tmp.path();
      }
      const std::string data = big.substr(c.memory_skew, c.length);
      // Aligned memory where the case asks for it: the thread's gather buffer is aligned.
      std::span<std::byte> buf = ThreadBuffer(c.length + c.memory_skew);
      ASSERT_GE(buf.size(), c.length + c.memory_skew);
      std::memcpy(buf.data() + c.memory_skew, data.data(), c.length);
      Status s = WriteAt(fd, dfd, std::span<const std::byte>(buf.data() + c.memory_skew, c.length),
                         c.offset, "test file");
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_TRUE(Slurp(fd) == Overlay(old, data, c.offset));
      if (dfd >= 0) ::close(dfd);
      ::close(fd);
    }
  }
}

// How many of the pages of [offset, offset+length) are in the page cache.
size_t CachedPages(int fd, uint64_t offset, uint64_t length) {
  void* map = ::mmap(nullptr, offset + length, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    ADD_FAILURE() << "mmap: " << std::strerror(errno);
    return 0;
  }
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_core((offset + length + page - 1) / page);
  EXPECT_EQ(::mincore(map, offset + length, in_core.data()), 0) << std::strerror(errno);
  ::munmap(map, offset + length);
  size_t n = 0;
  for (size_t i = offset / page; i < in_core.size(); ++i)
    n += in_core[i] & 1;
  return n;
}

// The point of the direct descriptor: the aligned middle of a big write leaves nothing in the
// page cache (the ordinary descriptor alone leaves all of it there).
TEST_F(DirectIoTest, TheAlignedMiddleBypassesThePageCache) {
  const std::string data = Pattern(1 << 20, 'x');
  struct statfs sf;
  ASSERT_EQ(::statfs(tmp.path().c_str(), &sf), 0);
  constexpr long kTmpfsMagic = 0x01021994;
  if (!DirectSupported()) GTEST_SKIP() << tmp.path() << " refuses O_DIRECT";
  if (sf.f_type == kTmpfsMagic) GTEST_SKIP() << "tmpfs serves O_DIRECT from the page cache";
  for (bool direct : {true, false}) {
    SCOPED_TRACE("direct=" + std::to_string(direct));
    int fd = Create(direct ? "d" : "o", "");
    int dfd = direct ? ReopenDirect(fd, O_WRONLY | O_CLOEXEC) : -1;
    if (direct) {
      ASSERT_GE(dfd, 0) << "O_DIRECT refused under " << tmp.path();
    }
    std::span<std::byte> buf = ThreadBuffer(data.size());
    std::memcpy(buf.data(), data.data(), data.size());
    ASSERT_TRUE(WriteAt(fd, dfd, buf, kDirectAlign, "test file").ok());
    EXPECT_EQ(CachedPages(fd, kDirectAlign, data.size()),
              direct ? 0u : data.size() / static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
    EXPECT_TRUE(Slurp(fd) == std::string(kDirectAlign, '\0') + data);
    if (dfd >= 0) ::close(dfd);
    ::close(fd);
  }
}

// A direct write drops the cached folios it touches, whole: a copy that sent the whole aligned
// range direct dropped the destination's large folios at its ends too, with bytes the copy
// does not change, and their next reader went to the device. Only the folio-aligned middle
// goes direct now, so what was cached outside the range stays cached.
TEST_F(DirectIoTest, CopyAtKeepsTheDestinationCachedOutsideItsRange) {
  struct statfs sf;
  ASSERT_EQ(::statfs(tmp.path().c_str(), &sf), 0);
  constexpr long kTmpfsMagic = 0x01021994;
  if (!DirectSupported()) GTEST_SKIP() << tmp.path() << " refuses O_DIRECT";
  if (sf.f_type == kTmpfsMagic) GTEST_SKIP() << "tmpfs serves O_DIRECT from the page cache";
  const uint64_t size = 4 * kLargestFolio;
  const uint64_t offset = kDirectAlign, length = 3 * kLargestFolio - 2 * kDirectAlign;
  const std::string old = Pattern(size, 'o');
  const std::string data = Pattern(size, 'n');
  int in = Create("in", data);
  int out = Create("out", old);  // written through the page cache: all of it cached
  int in_direct = ReopenDirect(in, O_RDONLY | O_CLOEXEC);
  int out_direct = ReopenDirect(out, O_WRONLY | O_CLOEXEC);
  ASSERT_TRUE(in_direct >= 0 && out_direct >= 0);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  ASSERT_EQ(CachedPages(out, 0, size), size / page)
      << "the destination is not cached to begin with";
  Status s = CopyAt(in, in_direct, out, out_direct, offset, length, "test copy");
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(CachedPages(out, 0, offset), offset / page) << "the bytes before the range";
  EXPECT_EQ(CachedPages(out, offset + length, size - offset - length),
            (size - offset - length) / page)
      << "the bytes after the range";
  EXPECT_EQ(CachedPages(out, kLargestFolio, kLargestFolio), 0u)
      << "the folio-aligned middle went direct";
  EXPECT_TRUE(Slurp(out) == Overlay(old, data.substr(offset, length), offset));
  for (int fd : {in, out, in_direct, out_direct})
    if (fd >= 0) ::close(fd);
}

// The copy takes exactly the range, or up to the end of the source when it is shorter, and
// leaves the rest of the destination alone.
TEST_F(DirectIoTest, CopyAtCopiesTheRangeUpToTheSourceEnd) {
  const std::string src_content = Pattern((9 << 20) + 333, 's');
  const std::string dst_content = Pattern(2 * kDirectAlign + 5, 'D');
  struct Case {
    uint64_t offset;
    uint64_t length;
  };
  const Case cases[] = {
      {0, src_content.size()},           {7, 3 * kDirectAlign},    {kDirectAlign, kDirectAlign},
      {kDirectAlign + 1, (5 << 20) + 2}, {(9 << 20) - 9, 1 << 20}, {100, 50},
      {src_content.size() + 10, 500},
  };
  const bool direct_ok = DirectSupported();
  for (bool direct : {true, false}) {
    if (direct && !direct_ok) continue;
    for (const Case& c : cases) {
      SCOPED_TRACE("direct=" + std::to_string(direct) + " offset=" + std::to_string(c.offset) +
                   " length=" + std::to_string(c.length));
      int in = Create("in", src_content);
      int out = Create("out", dst_content);
      int in_direct = direct ? ReopenDirect(in, O_RDONLY | O_CLOEXEC) : -1;
      int out_direct = direct ? ReopenDirect(out, O_WRONLY | O_CLOEXEC) : -1;
      if (direct) {
        ASSERT_TRUE(in_direct >= 0 && out_direct >= 0);
      }
      Status s = CopyAt(in, in_direct, out, out_direct, c.offset, c.length, "test copy");
      ASSERT_TRUE(s.ok()) << s.ToString();
      std::string want = dst_content;
      if (c.offset < src_content.size()) {
        uint64_t n = std::min<uint64_t>(c.length, src_content.size() - c.offset);
        want = Overlay(want, src_content.substr(c.offset, n), c.offset);
      }
      EXPECT_TRUE(Slurp(out) == want);
      for (int fd : {in, out, in_direct, out_direct})
        if (fd >= 0) ::close(fd);
    }
  }
}

}  // namespace
}  // namespace ktmfs::fstx

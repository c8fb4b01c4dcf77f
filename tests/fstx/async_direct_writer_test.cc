#include "fs/tx/async_direct_writer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "fs/tx/direct_io.h"
#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

std::span<const std::byte> B(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string ReadAt(int fd, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  ssize_t got = ::pread(fd, out.data(), n, static_cast<off_t>(offset));
  out.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return out;
}

class AsyncDirectWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = tmp_.path() + "/f";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd_, 0);
    direct_ = ReopenDirect(fd_, O_RDWR | O_CLOEXEC);
    if (direct_ < 0) GTEST_SKIP() << "the filesystem of /tmp refuses O_DIRECT here";
    writer_ = AsyncDirectWriter::Create("test file");
    if (!writer_) GTEST_SKIP() << "io_uring cannot be set up here";
  }
  void TearDown() override {
    writer_.reset();  // waits before the descriptors go
    if (direct_ >= 0) ::close(direct_);
    if (fd_ >= 0) ::close(fd_);
  }
  TempDir tmp_;
  std::string path_;
  int fd_ = -1, direct_ = -1;
  std::unique_ptr<AsyncDirectWriter> writer_;
};

// More writes than are ever in flight at once, each with its own bytes: every one lands.
TEST_F(AsyncDirectWriterTest, QueuedWritesLandByDrain) {
  constexpr size_t kLen = 128 << 10;
  std::string all;
  for (int i = 0; i < 3 * static_cast<int>(AsyncDirectWriter::kDepth); ++i) {
    std::string data = Pattern(kLen, static_cast<char>('a' + i % 20));
    auto queued = writer_->Queue(fd_, direct_, all.size(), B(data));
    ASSERT_TRUE(queued.ok()) << queued.status().ToString();
    EXPECT_TRUE(*queued);
    all += data;
  }
  ASSERT_TRUE(writer_->Drain().ok());
  EXPECT_TRUE(writer_->idle());
  EXPECT_EQ(ReadAt(fd_, 0, all.size() + 1), all);
}

// A write over a range still in flight could overtake it: it is not queued, and the caller
// writes it after a drain.
TEST_F(AsyncDirectWriterTest, AWriteOverlappingOneInFlightIsNotQueued) {
  std::string first = Pattern(128 << 10, 'a'), second = Pattern(128 << 10, 'b');
  auto q1 = writer_->Queue(fd_, direct_, 0, B(first));
  ASSERT_TRUE(q1.ok() && *q1);
  auto q2 = writer_->Queue(fd_, direct_, 64 << 10, B(second));
  ASSERT_TRUE(q2.ok());
  EXPECT_FALSE(*q2);
  auto beside = writer_->Queue(fd_, direct_, 128 << 10, B(second));
  ASSERT_TRUE(beside.ok());
  EXPECT_TRUE(*beside);
  ASSERT_TRUE(writer_->Drain().ok());
  auto again = writer_->Queue(fd_, direct_, 64 << 10, B(second));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again);
  ASSERT_TRUE(writer_->Drain().ok());
  EXPECT_EQ(ReadAt(fd_, 0, 64 << 10), first.substr(0, 64 << 10));
  EXPECT_EQ(ReadAt(fd_, 64 << 10, 128 << 10), second);
}

// A write the device refuses is found after the request was answered: Drain reports it, naming
// the file and the offset, and so does every later Queue, which queues nothing.
TEST_F(AsyncDirectWriterTest, AFailedWriteIsReportedByDrainAndEveryLaterQueue) {
  const int read_only = ReopenDirect(fd_, O_RDONLY | O_CLOEXEC);
  ASSERT_GE(read_only, 0);
  std::string data = Pattern(64 << 10, 'x');
  auto queued = writer_->Queue(fd_, read_only, 1 << 20, B(data));
  ASSERT_TRUE(queued.ok());
  ASSERT_TRUE(*queued);
  Status drained = writer_->Drain();
  EXPECT_EQ(drained.code(), EBADF) << drained.ToString();
  EXPECT_NE(drained.ToString().find("test file at offset 1048576"), std::string::npos)
      << drained.ToString();
  auto later = writer_->Queue(fd_, direct_, 0, B(data));
  EXPECT_FALSE(later.ok());
  EXPECT_EQ(later.status().code(), EBADF);
  EXPECT_EQ(writer_->Drain().code(), EBADF);
  ::close(read_only);
  EXPECT_EQ(ReadAt(fd_, 0, 1), "");  // nothing was written
}

// Data gathered into the thread's buffer is written from it: the writer takes the buffer, and
// the thread's next request gets another.
TEST_F(AsyncDirectWriterTest, TheThreadBufferIsTakenNotCopied) {
  constexpr size_t kLen = 256 << 10;
  std::span<std::byte> gathered = ThreadBuffer(kLen);
  ASSERT_EQ(gathered.size(), kLen);
  std::string data = Pattern(kLen, 'q');
  std::memcpy(gathered.data(), data.data(), kLen);
  auto queued = writer_->Queue(fd_, direct_, 0, gathered);
  ASSERT_TRUE(queued.ok() && *queued);
  std::span<std::byte> next = ThreadBuffer(kLen);
  EXPECT_NE(next.data(), gathered.data());
  std::memset(next.data(), 0, kLen);  // the thread's next request must not reach the queued one
  ASSERT_TRUE(writer_->Drain().ok());
  EXPECT_EQ(ReadAt(fd_, 0, kLen), data);
}

}  // namespace
}  // namespace ktmfs::fstx

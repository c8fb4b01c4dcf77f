// The log on real files through io_uring, buffered and with O_DIRECT.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>

#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ktmfs-log-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void RoundTrip(const UringStorageOptions& so) {
  TempDir dir;
  LogOptions opts;
  opts.block_size = 4096;
  opts.container_size = 64 << 10;
  opts.initial_containers = 2;
  opts.max_containers = 8;
  std::vector<std::pair<Lsn, size_t>> appended;
  {
    auto storage = VALUE(OpenUringStorage(dir.path(), so));
    auto log = VALUE(Log::Open(storage.get(), opts));
    Stream* s = VALUE(log->OpenStream("data"));
    for (size_t i = 0; i < 40; ++i) {
      size_t size = (i * 977) % 9000;
      Lsn lsn = VALUE(s->Append({.type = 3, .payload = Payload(size, i)}));
      appended.push_back({lsn, size});
      if (i % 3 == 0) ASSERT_OK(s->Flush(lsn));
    }
    VALUE(s->WriteRestartArea(Payload(33, 1)));
    ASSERT_OK(log->Close());
    EXPECT_GT(log->stats().syncs, 0u);
  }
  auto storage = VALUE(OpenUringStorage(dir.path(), so));
  auto log = VALUE(Log::Open(storage.get(), opts, false));
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), appended.size() + 1);
  for (size_t i = 0; i < appended.size(); ++i) {
    EXPECT_EQ(all[i].lsn, appended[i].first);
    EXPECT_TRUE(all[i].payload == Payload(appended[i].second, i)) << i;
  }
  Stream* s = VALUE(log->OpenStream("data", false));
  EXPECT_TRUE(VALUE(s->ReadRestartArea()).payload == Payload(33, 1));
}

TEST(UringStorage, MakesItsDirectoriesPrivateWhateverTheUmask) {
  TempDir dir;
  const std::string log_dir = dir.path() + "/state/log";
  mode_t old = ::umask(0);
  auto storage = OpenUringStorage(log_dir, {});
  ::umask(old);
  ASSERT_TRUE(storage.ok()) << storage.status().ToString();
  for (const std::string& d : {dir.path() + "/state", log_dir}) {
    struct stat st;
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
}

TEST(UringStorage, LogRoundTripBuffered) {
  RoundTrip({});
}

TEST(UringStorage, LogRoundTripDirectIo) {
  UringStorageOptions so;
  so.direct_io = true;
  // O_DIRECT is refused by some filesystems (tmpfs); that is the machine, not the log.
  TempDir probe;
  auto storage = VALUE(OpenUringStorage(probe.path(), so));
  auto f = storage->Open("probe", OpenMode::kCreate);
  if (!f.ok() && f.status().code() == EINVAL) {
    GTEST_SKIP() << "O_DIRECT not supported under /tmp: " << f.status().ToString();
  }
  RoundTrip(so);
}

TEST(UringStorage, WriteReadAndList) {
  TempDir dir;
  auto storage = VALUE(OpenUringStorage(dir.path()));
  auto f = VALUE(storage->Open("a", OpenMode::kCreate));
  ASSERT_OK(f->Allocate(8192));
  EXPECT_EQ(VALUE(f->Size()), 8192u);
  auto p1 = Payload(100, 1), p2 = Payload(300, 2);
  WriteOp ops[2] = {{10, p1}, {5000, p2}};
  ASSERT_OK(f->Write(ops, true));
  std::vector<std::byte> back(300);
  EXPECT_EQ(VALUE(f->Read(5000, back)), 300u);
  EXPECT_TRUE(back == p2);
  ASSERT_OK(storage->Rename("a", "b"));
  auto names = VALUE(storage->List());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0], "b");
  EXPECT_TRUE(storage->Open("a", OpenMode::kExisting).status().IsNotFound());
}

// One range with sync takes the RWF_DSYNC path; several take the linked io_uring path.
TEST(UringStorage, OneSyncedRangeWritesAndExtendsTheFile) {
  TempDir dir;
  auto storage = VALUE(OpenUringStorage(dir.path()));
  auto f = VALUE(storage->Open("one", OpenMode::kCreate));
  ASSERT_OK(f->Allocate(4096));
  auto inside = Payload(1000, 7), beyond = Payload(5000, 8);
  WriteOp first{100, inside};
  ASSERT_OK(f->Write({&first, 1}, true));
  WriteOp second{6000, beyond};
  ASSERT_OK(f->Write({&second, 1}, true));
  EXPECT_EQ(VALUE(f->Size()), 11000u);
  std::vector<std::byte> back(5000);
  EXPECT_EQ(VALUE(f->Read(6000, back)), 5000u);
  EXPECT_TRUE(back == beyond);
  back.resize(1000);
  EXPECT_EQ(VALUE(f->Read(100, back)), 1000u);
  EXPECT_TRUE(back == inside);
}

TEST(UringStorage, ManyWritesInOneCallWithASmallQueue) {
  TempDir dir;
  UringStorageOptions so;
  so.queue_depth = 4;
  so.rings = 1;
  auto storage = VALUE(OpenUringStorage(dir.path(), so));
  auto f = VALUE(storage->Open("many", OpenMode::kCreate));
  std::vector<std::vector<std::byte>> data;
  std::vector<WriteOp> ops;
  for (int i = 0; i < 100; ++i)
    data.push_back(Payload(700, i));
  for (int i = 0; i < 100; ++i)
    ops.push_back({uint64_t(i) * 700, data[i]});
  ASSERT_OK(f->Write(ops, true));
  std::vector<std::byte> back(700);
  for (int i = 0; i < 100; i += 9) {
    EXPECT_EQ(VALUE(f->Read(uint64_t(i) * 700, back)), 700u);
    EXPECT_TRUE(back == data[i]) << i;
  }
}

TEST(UringStorage, ErrorsNameTheFile) {
  TempDir dir;
  auto storage = VALUE(OpenUringStorage(dir.path()));
  auto missing = storage->Open("nope", OpenMode::kExisting);
  ASSERT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace ktmfs::log

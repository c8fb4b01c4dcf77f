// The fault-injecting storage itself: event numbering, each crash mode, injected failures.
#include <gtest/gtest.h>

#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;

std::vector<std::byte> Bytes(size_t n, uint8_t v) {
  return std::vector<std::byte>(n, std::byte{v});
}

TEST(FaultStorage, EventsCountWritesAndSyncs) {
  FaultInjectingStorage s;
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  EXPECT_EQ(s.events(), 0u);
  auto d = Bytes(10, 1);
  WriteOp op{0, d};
  ASSERT_OK(f->Write({&op, 1}, false));
  EXPECT_EQ(s.events(), 1u);
  ASSERT_OK(f->Write({&op, 1}, true));  // the writes, then the sync
  EXPECT_EQ(s.events(), 3u);
  ASSERT_OK(f->Sync());
  EXPECT_EQ(s.events(), 4u);
  EXPECT_EQ(s.syncs(), 2u);
}

TEST(FaultStorage, DropUnsyncedKeepsOnlySyncedData) {
  FaultInjectingStorage s;
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  auto a = Bytes(1024, 0xaa), b = Bytes(1024, 0xbb);
  WriteOp wa{0, a}, wb{1024, b};
  ASSERT_OK(f->Write({&wa, 1}, true));
  ASSERT_OK(f->Write({&wb, 1}, false));
  s.CrashNow(CrashMode::kDropUnsynced);
  EXPECT_TRUE(s.crashed());
  std::byte buf[1];
  EXPECT_EQ(f->Read(0, buf).status().code(), EIO);
  s.Restart();
  EXPECT_FALSE(s.crashed());
  EXPECT_EQ(f->Read(0, buf).status().code(), EIO);  // handles from before the crash stay dead
  auto g = VALUE(s.Open("f", OpenMode::kExisting));
  EXPECT_EQ(VALUE(g->Size()), 1024u);
  EXPECT_TRUE(s.Contents("f") == a);
}

TEST(FaultStorage, TearLastWriteKeepsASectorPrefixAndGarbage) {
  bool saw_partial = false;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    FaultInjectingStorage s(seed, 512);
    auto f = VALUE(s.Open("f", OpenMode::kCreate));
    ASSERT_OK(f->Allocate(8192));
    auto d = Bytes(4096, 0xcc);
    WriteOp op{1024, d};
    ASSERT_OK(f->Write({&op, 1}, false));
    s.CrashNow(CrashMode::kTearLastWrite);
    s.Restart();
    auto img = s.Contents("f");
    ASSERT_EQ(img.size(), 8192u);
    // A prefix of whole sectors is the new data; then at most one sector of anything; then old.
    size_t at = 1024;
    while (at < 5120 && img[at] == std::byte{0xcc} && img[at + 511] == std::byte{0xcc})
      at += 512;
    for (size_t i = at + 512; i < 8192; ++i)
      ASSERT_EQ(img[i], std::byte{0}) << "seed " << seed;
    for (size_t i = 0; i < 1024; ++i)
      ASSERT_EQ(img[i], std::byte{0});
    saw_partial |= at > 1024 && at < 5120;
  }
  EXPECT_TRUE(saw_partial);
}

TEST(FaultStorage, KeepRandomUnsyncedKeepsSomeSectors) {
  FaultInjectingStorage s(3, 512);
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  ASSERT_OK(f->Allocate(64 * 512));
  auto d = Bytes(64 * 512, 0xdd);
  WriteOp op{0, d};
  ASSERT_OK(f->Write({&op, 1}, false));
  s.CrashNow(CrashMode::kKeepRandomUnsynced);
  s.Restart();
  auto img = s.Contents("f");
  int kept = 0;
  for (int sec = 0; sec < 64; ++sec) {
    bool all_new = true, all_old = true;
    for (int i = 0; i < 512; ++i) {
      all_new &= img[sec * 512 + i] == std::byte{0xdd};
      all_old &= img[sec * 512 + i] == std::byte{0};
    }
    ASSERT_TRUE(all_new || all_old) << "sector " << sec << " is mixed";
    kept += all_new;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 64);
}

TEST(FaultStorage, CrashAtEventStopsThatEvent) {
  FaultInjectingStorage s;
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  auto a = Bytes(100, 1), b = Bytes(100, 2);
  WriteOp wa{0, a}, wb{0, b};
  s.CrashAtEvent(4, CrashMode::kDropUnsynced);      // the sync of the second write
  ASSERT_OK(f->Write({&wa, 1}, true));              // events 1, 2
  EXPECT_EQ(f->Write({&wb, 1}, true).code(), EIO);  // 3 runs, 4 crashes
  EXPECT_TRUE(s.crashed());
  s.Restart();
  EXPECT_TRUE(s.Contents("f") == a);
}

TEST(FaultStorage, FailAtEventFailsOnlyThatEvent) {
  FaultInjectingStorage s;
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  auto a = Bytes(100, 1);
  WriteOp wa{0, a};
  s.FailAtEvent(1, ENOSPC);
  EXPECT_EQ(f->Write({&wa, 1}, true).code(), ENOSPC);
  EXPECT_FALSE(s.crashed());
  ASSERT_OK(f->Write({&wa, 1}, true));
  EXPECT_TRUE(s.Contents("f") == a);
}

TEST(FaultStorage, MaxFileSizeIsEnospc) {
  FaultInjectingStorage s;
  s.set_max_file_size(4096);
  auto f = VALUE(s.Open("f", OpenMode::kCreate));
  EXPECT_EQ(f->Allocate(8192).code(), ENOSPC);
  ASSERT_OK(f->Allocate(4096));
}

}  // namespace
}  // namespace ktmfs::log

#include "fs/tx/stream_truncator.h"

#include <gtest/gtest.h>

#include <memory>

#include "log/fault_storage.h"

namespace ktmfs::fstx {
namespace {

TEST(StreamTruncator, MovesTheBaseToWhatIsNeededOnceEnoughWasAppended) {
  log::FaultInjectingStorage storage(7);
  log::LogOptions lo;
  lo.container_size = 256 << 10;
  lo.max_containers = 16;  // a sixteenth of the log: 256 KiB between moves
  auto l = log::Log::Open(&storage, lo, true);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  auto stream = (*l)->OpenStream("fs0", true);
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  StreamTruncator t(l->get(), *stream, "fs0");
  EXPECT_FALSE(*t.Offer(log::kInvalidLsn, true));  // an empty stream

  std::vector<std::byte> payload(1000);
  log::Lsn first = log::kInvalidLsn, tenth = log::kInvalidLsn;
  for (int i = 0; i < 400; i++) {
    auto lsn = (*stream)->Append({.type = 1, .payload = payload});
    ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
    if (i == 0) first = *lsn;
    if (i == 10) tenth = *lsn;
  }
  const log::Lsn base = (*stream)->base_lsn();
  // Ten records in is too little to be worth a restart area...
  auto moved = t.Offer(tenth);
  ASSERT_TRUE(moved.ok());
  EXPECT_FALSE(*moved);
  EXPECT_EQ((*stream)->base_lsn(), base);
  // ...unless forced (a clean shutdown).
  moved = t.Offer(tenth, true);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_TRUE(*moved);
  EXPECT_EQ((*stream)->base_lsn(), tenth);
  // Past the last move by more than the step, it moves on its own.
  const log::Lsn last = (*stream)->last_lsn();
  ASSERT_GT(last - tenth, uint64_t{256 << 10});
  moved = t.Offer(last);
  ASSERT_TRUE(moved.ok());
  EXPECT_TRUE(*moved);
  EXPECT_EQ((*stream)->base_lsn(), last);
  EXPECT_LT(first, tenth);
}

}  // namespace
}  // namespace ktmfs::fstx

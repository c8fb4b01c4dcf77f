// Truncation and reuse of the ring, growth up to max_containers, "log full", reservations.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;
using testing::SmallOptions;

size_t ContainerFiles(FaultInjectingStorage* storage) {
  auto names = VALUE(storage->List());
  return size_t(std::count_if(names.begin(), names.end(),
                              [](const std::string& n) { return n.starts_with("container."); }));
}

TEST(LogSpace, TruncationLetsTheRingWrapWithoutGrowing) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 2);
  Lsn last = 0;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("s"));
    for (int i = 0; i < 500; ++i) {
      last = VALUE(s->Append({.type = 1, .payload = Payload(300, i)}));
      ASSERT_OK(s->Flush(last));
      ASSERT_OK(s->SetBaseLsn(last));
    }
    // Many laps of a two-container ring.
    EXPECT_GT(log->end_lsn(), 10 * 2 * opts.container_size);
  }
  EXPECT_EQ(ContainerFiles(&storage), 2u);
  auto log = VALUE(Log::Open(&storage, opts, false));
  Stream* s = VALUE(log->OpenStream("s", false));
  auto all = ReadEverything(log.get());
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.back().lsn, last);
  EXPECT_TRUE(all.back().payload == Payload(300, 499));
  EXPECT_LT(all.size(), 60u);  // only what the ring still holds
  EXPECT_TRUE(s->Read(2 * opts.container_size).status().IsNotFound());
  EXPECT_EQ(s->last_lsn(), last);
}

TEST(LogSpace, GrowsUpToMaxThenLogFullThenTruncationFreesSpace) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 4);
  auto log = VALUE(Log::Open(&storage, opts));
  Stream* a = VALUE(log->OpenStream("a"));
  Stream* pin = VALUE(log->OpenStream("pinned"));
  std::vector<Lsn> lsns;
  Status full;
  for (int i = 0; i < 1000; ++i) {
    auto lsn = a->Append({.type = 1, .payload = Payload(1000, i)});
    if (!lsn.ok()) {
      full = lsn.status();
      break;
    }
    lsns.push_back(*lsn);
    ASSERT_OK(a->Flush(*lsn));
    ASSERT_OK(a->SetBaseLsn(*lsn));  // a does not pin; the other stream does
  }
  ASSERT_TRUE(full.IsLogFull()) << full.ToString();
  EXPECT_NE(full.message().find("'pinned'"), std::string::npos) << full.message();
  EXPECT_EQ(ContainerFiles(&storage), 4u);
  EXPECT_GT(lsns.size(), 20u);
  // Nothing was damaged by running full.
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), lsns.size());
  EXPECT_EQ(all.back().lsn, lsns.back());
  // Once the pinning stream lets go, the space is reused.
  ASSERT_OK(pin->SetBaseLsn(log->end_lsn()));
  for (int i = 0; i < 100; ++i) {
    Lsn lsn = VALUE(a->Append({.type = 1, .payload = Payload(1000, i)}));
    ASSERT_OK(a->Flush(lsn));
    ASSERT_OK(a->SetBaseLsn(lsn));
    ASSERT_OK(pin->SetBaseLsn(lsn));
  }
  EXPECT_EQ(ContainerFiles(&storage), 4u);
}

TEST(LogSpace, ReservedSpaceIsThereWhenTheLogIsFull) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 2)));
  Stream* s = VALUE(log->OpenStream("s"));
  auto reservation = VALUE(s->Reserve(1000));
  const uint64_t reserved = reservation->remaining();
  EXPECT_GE(reserved, 1000u);
  Status full;
  for (int i = 0; i < 1000 && full.ok(); ++i) {
    auto lsn = s->Append({.type = 1, .payload = Payload(200, i)});
    if (!lsn.ok()) full = lsn.status();
  }
  ASSERT_TRUE(full.IsLogFull()) << full.ToString();
  EXPECT_TRUE(s->Reserve(1000).status().IsLogFull());
  Lsn lsn = VALUE(s->Append({.type = 2, .payload = Payload(1000, 7)}, reservation.get()));
  EXPECT_LT(reservation->remaining(), reserved);
  ASSERT_OK(s->Flush(lsn));
  EXPECT_TRUE(VALUE(s->Read(lsn)).payload == Payload(1000, 7));
  // What is left of the reservation does not hold another record of that size.
  EXPECT_EQ(s->Append({.type = 2, .payload = Payload(1000, 8)}, reservation.get()).status().code(),
            EINVAL);
}

// The reserve (LogOptions::reserve_percent): ordinary appends get "log full" while it is still
// free, appends that may use it and restart areas go on, and the log reopens full.
TEST(LogSpace, TheReserveIsLeftForAppendsThatUseIt) {
  FaultInjectingStorage storage;
  LogOptions opts = SmallOptions(2, 4);
  opts.reserve_percent = 25;  // 8 KiB of 32
  std::vector<Lsn> lsns;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("s"));
    Status full;
    for (int i = 0; i < 1000 && full.ok(); ++i) {
      auto lsn = s->Append({.type = 1, .payload = Payload(200, i)});
      if (lsn.ok()) lsns.push_back(*lsn);
      if (!lsn.ok()) full = lsn.status();
    }
    ASSERT_TRUE(full.IsLogFull()) << full.ToString();
    EXPECT_NE(full.message().find("kept for commits, rollbacks and recovery"), std::string::npos)
        << full.message();
    // Far from the end of the ring: about the reserve is still free.
    EXPECT_LE(log->end_lsn() + 6 * 1024, log->geometry().start_lsn + 4 * opts.container_size);
    EXPECT_TRUE(s->Reserve(100).status().IsLogFull());  // reservations are ordinary work
    int reserved = 0;
    for (int i = 0; i < 10; ++i) {
      auto lsn = s->Append({.type = 2, .payload = Payload(200, i), .use_reserve = true});
      ASSERT_OK(lsn.status());
      lsns.push_back(*lsn);
      reserved++;
    }
    EXPECT_EQ(reserved, 10);
    VALUE(s->WriteRestartArea(Payload(16, 1)));
    EXPECT_TRUE(s->Append({.type = 1, .payload = Payload(200, 0)}).status().IsLogFull());
    ASSERT_OK(log->Close());
  }
  // A full log opens, reads back whole and still takes what may use the reserve.
  auto log = VALUE(Log::Open(&storage, opts, false));
  Stream* s = VALUE(log->OpenStream("s", false));
  auto all = ReadEverything(log.get());
  EXPECT_GE(all.size(), lsns.size());
  EXPECT_TRUE(s->Append({.type = 1, .payload = Payload(200, 0)}).status().IsLogFull());
  ASSERT_OK(s->Append({.type = 2, .payload = Payload(200, 0), .use_reserve = true}).status());
  // Moving the base frees the ring for everyone again.
  ASSERT_OK(s->SetBaseLsn(log->end_lsn()));
  VALUE(s->WriteRestartArea(Payload(16, 2)));
  ASSERT_OK(s->Append({.type = 1, .payload = Payload(200, 0)}).status());
}

TEST(LogSpace, ReserveOfMoreThanHalfTheLogIsRefused) {
  FaultInjectingStorage storage;
  LogOptions opts = SmallOptions(2, 4);
  opts.reserve_percent = 51;
  EXPECT_EQ(Log::Open(&storage, opts).status().code(), EINVAL);
}

TEST(LogSpace, DroppedReservationGivesItsSpaceBack) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 2)));
  Stream* s = VALUE(log->OpenStream("s"));
  int without = 0;
  {
    auto big = VALUE(s->Reserve(8000));
    while (s->Append({.type = 1, .payload = Payload(100, 1)}).ok())
      without++;
  }
  int after = 0;
  while (s->Append({.type = 1, .payload = Payload(100, 1)}).ok())
    after++;
  EXPECT_GT(after, 10);
  EXPECT_GT(without, 10);
}

TEST(LogSpace, ReservationMayOutliveItsLog) {
  FaultInjectingStorage storage;
  std::unique_ptr<Reservation> r;
  {
    auto log = VALUE(Log::Open(&storage, SmallOptions()));
    Stream* s = VALUE(log->OpenStream("s"));
    r = VALUE(s->Reserve(100));
  }
  EXPECT_GT(r->remaining(), 0u);
  r.reset();  // must not touch the closed log
}

TEST(LogSpace, RecordLargerThanTheRingIsLogFull) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 2)));
  Stream* s = VALUE(log->OpenStream("s"));
  auto r = s->Append({.type = 1, .payload = Payload(3 * 8192, 1)});
  EXPECT_TRUE(r.status().IsLogFull()) << r.status().ToString();
  // And the log is still fine.
  Lsn lsn = VALUE(s->Append({.type = 1, .payload = Payload(10, 1)}));
  ASSERT_OK(s->Flush(lsn));
}

}  // namespace
}  // namespace ktmfs::log

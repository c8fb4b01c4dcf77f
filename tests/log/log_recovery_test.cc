// Recovery scan rules on hand-made damage: a torn tail inside a block is cut and stays cut,
// leftovers of the crashed session never come back, damage in the middle is reported.
#include <gtest/gtest.h>

#include "log/format.h"
#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;
using testing::SmallOptions;

// Flips a byte at LSN `at` (logical container 1 is container.000000; no wrap in these tests).
void Flip(FaultInjectingStorage* storage, const LogOptions& o, Lsn at) {
  uint64_t logical = at / o.container_size;
  std::string name = "container.00000" + std::to_string(logical - 1);
  auto bytes = storage->Contents(name);
  ASSERT_LT(at % o.container_size, bytes.size());
  bytes[at % o.container_size] ^= std::byte{0x10};
  storage->SetContents(name, bytes);
}

std::vector<Lsn> Lsns(const std::vector<Record>& records) {
  std::vector<Lsn> out;
  for (const auto& r : records)
    out.push_back(r.lsn);
  return out;
}

TEST(LogRecovery, TornTailInsideABlockIsCutAndLeftoversNeverReturn) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 16);
  Lsn a, b, c, e;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("s"));
    a = VALUE(s->Append({.type = 1, .payload = Payload(100, 1)}));
    ASSERT_OK(s->Flush(a));
    b = VALUE(s->Append({.type = 1, .payload = Payload(50, 2)}));
    c = VALUE(s->Append({.type = 1, .payload = Payload(1500, 3)}));  // spans blocks
    e = VALUE(s->Append({.type = 1, .payload = Payload(60, 4)}));
    ASSERT_OK(s->Flush(e));
  }
  // As if the sector holding c's start had been torn in the last flush: c and e were written
  // by that same flush, so this is a torn tail, not damage.
  Flip(&storage, opts, c + format::kFragmentHeaderSize + 45);
  Lsn d;
  {
    auto log = VALUE(Log::Open(&storage, opts, false));
    EXPECT_EQ(Lsns(ReadEverything(log.get())), (std::vector<Lsn>{a, b}));
    Stream* s = VALUE(log->OpenStream("s", false));
    EXPECT_EQ(s->last_lsn(), b);
    d = VALUE(s->Append({.type = 1, .payload = Payload(10, 5)}));
    EXPECT_GT(d / opts.block_size, c / opts.block_size);  // the cut block is not written again
    ASSERT_OK(s->Flush(d));
  }
  auto log = VALUE(Log::Open(&storage, opts, false));
  Status error;
  auto all = ReadEverything(log.get(), kInvalidLsn, &error);
  ASSERT_TRUE(error.ok()) << error.ToString();
  // Not c's continuation, not e: only what the reopened log accepted, then d.
  std::vector<Lsn> got = Lsns(all);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], a);
  EXPECT_EQ(got[1], b);
  EXPECT_GT(got[2], b);
  EXPECT_TRUE(all[2].payload == Payload(10, 5));
}

TEST(LogRecovery, DamageFollowedBySyncedRecordsIsReportedNotCut) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 16);
  std::vector<Lsn> lsns;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("journal"));
    for (int i = 0; i < 6; ++i) {
      lsns.push_back(VALUE(s->Append({.type = 1, .payload = Payload(200, i)})));
      ASSERT_OK(s->Flush(lsns.back()));  // each in its own flush
    }
  }
  Flip(&storage, opts, lsns[2] + 100);
  auto log = VALUE(Log::Open(&storage, opts, false));
  EXPECT_EQ(log->end_lsn() > lsns[5], true);  // the tail is after the damage
  Stream* s = VALUE(log->OpenStream("journal", false));
  EXPECT_EQ(s->last_lsn(), lsns[5]);
  auto bad = s->Read(lsns[2]);
  ASSERT_TRUE(bad.status().IsCorruption()) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("'journal'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("0x"), std::string::npos);
  EXPECT_TRUE(VALUE(s->Read(lsns[3])).payload == Payload(200, 3));
  Status error;
  auto all = ReadEverything(log.get(), kInvalidLsn, &error);
  EXPECT_TRUE(error.IsCorruption());
  EXPECT_EQ(Lsns(all), (std::vector<Lsn>{lsns[0], lsns[1]}));
  // Reading on from after the damage works.
  EXPECT_EQ(Lsns(ReadEverything(log.get(), lsns[3])),
            (std::vector<Lsn>{lsns[3], lsns[4], lsns[5]}));
}

TEST(LogRecovery, NoRecordWithABadChecksumIsEverReturned) {
  // Flip every byte of a small log in turn; whatever opens must return only good records.
  FaultInjectingStorage pristine;
  const LogOptions opts = SmallOptions(2, 16);
  std::vector<std::pair<Lsn, std::vector<std::byte>>> good;
  {
    auto log = VALUE(Log::Open(&pristine, opts));
    Stream* s = VALUE(log->OpenStream("s"));
    for (int i = 0; i < 5; ++i) {
      auto p = Payload(150 * i + 7, i);
      Lsn lsn = VALUE(s->Append({.type = 1, .payload = p}));
      good.push_back({lsn, p});
      ASSERT_OK(s->Flush(lsn));
    }
    ASSERT_OK(log->Close());
  }
  auto image = pristine.Contents("container.000000");
  auto base = pristine.Contents("ktmfs-log.base");
  const size_t used = size_t(good.back().first % opts.container_size) + 1024;
  for (size_t at = 0; at < used; at += 3) {
    FaultInjectingStorage storage;
    storage.SetContents("ktmfs-log.base", base);
    storage.SetContents("container.000001", pristine.Contents("container.000001"));
    auto damaged = image;
    damaged[at] ^= std::byte{0x01};
    storage.SetContents("container.000000", damaged);
    auto log = Log::Open(&storage, opts, false);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    Status error;
    for (const Record& r : ReadEverything(log->get(), kInvalidLsn, &error)) {
      bool found = false;
      for (const auto& [lsn, p] : good)
        found |= (lsn == r.lsn && p == r.payload);
      ASSERT_TRUE(found) << "byte " << at << ": LSN " << r.lsn << " is not a good record";
    }
  }
}

}  // namespace
}  // namespace ktmfs::log

// Round trips, streams, restart areas and reopening, on the in-memory storage.
#include <gtest/gtest.h>

#include <map>

#include "log/format.h"
#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;
using testing::SmallOptions;

struct Appended {
  Lsn lsn;
  StreamId stream;
  uint16_t type;
  std::vector<std::byte> payload;
};

void ExpectSame(const Record& r, const Appended& a) {
  EXPECT_EQ(r.lsn, a.lsn);
  EXPECT_EQ(r.stream, a.stream);
  EXPECT_EQ(r.type, a.type);
  EXPECT_TRUE(r.payload == a.payload) << "payload of LSN " << a.lsn << " differs";
}

TEST(LogBasic, RecordsOfEverySizeAroundBoundariesRoundTrip) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 64);
  std::vector<size_t> sizes;
  // Around one fragment (512 - 32 - 40 = 440 payload bytes), several blocks and a container.
  for (size_t base :
       {size_t(0), size_t(440), size_t(920), size_t(1400), size_t(8192 - 40), size_t(3 * 8192)}) {
    for (int d = -3; d <= 3; ++d) {
      if (int64_t(base) + d >= 0) sizes.push_back(size_t(int64_t(base) + d));
    }
  }
  std::vector<Appended> appended;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("data"));
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto payload = Payload(sizes[i], i);
      Lsn lsn = VALUE(s->Append({.type = uint16_t(i), .payload = payload}));
      appended.push_back({lsn, s->id(), uint16_t(i), payload});
      if (i % 5 == 4) ASSERT_OK(s->Flush(lsn));
    }
    for (const auto& a : appended) {
      auto r = VALUE(s->Read(a.lsn));
      ExpectSame(r, a);
    }
    auto all = ReadEverything(log.get());
    ASSERT_EQ(all.size(), appended.size());
    for (size_t i = 0; i < all.size(); ++i)
      ExpectSame(all[i], appended[i]);
    ASSERT_OK(log->Close());
  }
  auto log = VALUE(Log::Open(&storage, opts, false));
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), appended.size());
  for (size_t i = 0; i < all.size(); ++i)
    ExpectSame(all[i], appended[i]);
  Stream* s = VALUE(log->OpenStream("data", false));
  EXPECT_EQ(s->last_lsn(), appended.back().lsn);
  Lsn next = VALUE(s->Append({.type = 1, .payload = Payload(10, 99)}));
  EXPECT_GT(next, appended.back().lsn);
}

TEST(LogBasic, EverySizeUpToTwoBlocksRoundTripsAcrossContainers) {
  FaultInjectingStorage storage;
  LogOptions opts = SmallOptions(2, 64);
  opts.container_size = 32 << 10;
  std::vector<Appended> appended;
  auto log = VALUE(Log::Open(&storage, opts));
  Stream* s = VALUE(log->OpenStream("sizes"));
  for (size_t size = 0; size <= 1100; ++size) {
    auto payload = Payload(size, 3);
    Lsn lsn = VALUE(s->Append({.type = 4, .payload = payload}));
    appended.push_back({lsn, s->id(), 4, payload});
    if (size % 97 == 0) ASSERT_OK(s->Flush(lsn));  // flushes end at varied places in a block
  }
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), appended.size());
  for (size_t i = 0; i < all.size(); ++i)
    ExpectSame(all[i], appended[i]);
  EXPECT_GT(log->end_lsn() / opts.container_size, 10u);  // crossed many containers
}

TEST(LogBasic, InterleavedStreamsKeepTheirChains) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 16)));
  Stream* streams[3] = {VALUE(log->OpenStream("a")), VALUE(log->OpenStream("b")),
                        VALUE(log->OpenStream("c"))};
  std::mt19937_64 rng(5);
  std::vector<Appended> appended;
  std::map<StreamId, std::vector<Lsn>> per_stream;
  for (int i = 0; i < 200; ++i) {
    Stream* s = streams[rng() % 3];
    auto payload = Payload(rng() % 700, i);
    Lsn prev = per_stream[s->id()].empty() ? kInvalidLsn : per_stream[s->id()].back();
    Lsn lsn = VALUE(s->Append({.type = 7, .payload = payload, .prev_lsn = prev}));
    appended.push_back({lsn, s->id(), 7, payload});
    per_stream[s->id()].push_back(lsn);
  }
  ASSERT_OK(log->Flush());
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), appended.size());
  for (size_t i = 0; i < all.size(); ++i)
    ExpectSame(all[i], appended[i]);
  for (Stream* s : streams) {
    const auto& lsns = per_stream[s->id()];
    // Forward within the stream.
    auto fwd = s->ReadForward(kInvalidLsn);
    Record r;
    size_t n = 0;
    while (VALUE(fwd->Next(&r))) {
      ASSERT_LT(n, lsns.size());
      EXPECT_EQ(r.lsn, lsns[n++]);
      EXPECT_EQ(r.stream, s->id());
    }
    EXPECT_EQ(n, lsns.size());
    // Backward along the log's chain and the client's chain.
    for (auto chain : {Stream::Chain::kStreamPrevious, Stream::Chain::kPrevious}) {
      auto back = s->ReadBackward(lsns.back(), chain);
      size_t k = lsns.size();
      while (VALUE(back->Next(&r))) {
        ASSERT_GT(k, 0u);
        EXPECT_EQ(r.lsn, lsns[--k]);
      }
      EXPECT_EQ(k, 0u);
    }
    // Another stream's LSN is not this stream's record.
    Stream* other = streams[(s->id()) % 3];
    EXPECT_TRUE(other->Read(lsns[0]).status().IsNotFound());
  }
}

TEST(LogBasic, UndoNextChainIsFollowed) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions()));
  Stream* s = VALUE(log->OpenStream("tm"));
  auto p = Payload(20, 1);
  Lsn a = VALUE(s->Append({.type = 1, .payload = p}));
  Lsn b = VALUE(s->Append({.type = 1, .payload = p, .prev_lsn = a}));
  Lsn c = VALUE(s->Append({.type = 2, .payload = p, .prev_lsn = b, .undo_next_lsn = a}));
  auto cur = s->ReadBackward(c, Stream::Chain::kUndoNext);
  Record r;
  ASSERT_TRUE(VALUE(cur->Next(&r)));
  EXPECT_EQ(r.lsn, c);
  ASSERT_TRUE(VALUE(cur->Next(&r)));
  EXPECT_EQ(r.lsn, a);
  EXPECT_FALSE(VALUE(cur->Next(&r)));
}

TEST(LogBasic, ReservedTypesAreRefused) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, SmallOptions()));
  Stream* s = VALUE(log->OpenStream("x"));
  auto r = s->Append({.type = kFirstReservedRecordType});
  EXPECT_EQ(r.status().code(), EINVAL);
}

TEST(LogBasic, RestartAreasAndPreviousOnes) {
  FaultInjectingStorage storage;
  Lsn ra[3];
  {
    auto log = VALUE(Log::Open(&storage, SmallOptions(2, 16)));
    Stream* s = VALUE(log->OpenStream("tm"));
    EXPECT_TRUE(s->ReadRestartArea().status().IsNotFound());
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 5; ++j)
        VALUE(s->Append({.type = 1, .payload = Payload(300, j)}));
      ra[i] = VALUE(s->WriteRestartArea(Payload(100 + i, 50 + i)));
      EXPECT_GE(log->flushed_lsn(), ra[i]);
    }
    auto r = VALUE(s->ReadRestartArea());
    EXPECT_EQ(r.lsn, ra[2]);
    EXPECT_EQ(r.type, kRestartAreaRecordType);
    EXPECT_TRUE(r.payload == Payload(102, 52));
    // Not closed: the restart pointer is in the base file already.
  }
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 16), false));
  Stream* s = VALUE(log->OpenStream("tm", false));
  auto r = VALUE(s->ReadRestartArea());
  EXPECT_EQ(r.lsn, ra[2]);
  auto p1 = VALUE(s->ReadPreviousRestartArea(ra[2]));
  EXPECT_EQ(p1.lsn, ra[1]);
  EXPECT_TRUE(p1.payload == Payload(101, 51));
  auto p0 = VALUE(s->ReadPreviousRestartArea(ra[1]));
  EXPECT_EQ(p0.lsn, ra[0]);
  EXPECT_TRUE(s->ReadPreviousRestartArea(ra[0]).status().IsNotFound());
  EXPECT_EQ(log->Streams()[0].restart_lsn, ra[2]);
}

// Flips one byte of the record at lsn in its container (no wrap: logical 1 is container 0).
void Damage(FaultInjectingStorage* storage, const LogOptions& o, Lsn lsn, size_t at) {
  uint64_t logical = lsn / o.container_size;
  std::string name = "container.00000" + std::to_string(logical - 1);
  auto bytes = storage->Contents(name);
  bytes[lsn % o.container_size + at] ^= std::byte{0x40};
  storage->SetContents(name, bytes);
}

TEST(LogBasic, DamagedNewestRestartAreaFallsBackToThePreviousOne) {
  FaultInjectingStorage storage;
  const LogOptions opts = SmallOptions(2, 16);
  Lsn ra1, ra2;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("tm"));
    ra1 = VALUE(s->WriteRestartArea(Payload(64, 1)));
    ra2 = VALUE(s->WriteRestartArea(Payload(64, 2)));
    // Later flushed records make the damage a damage in the middle, not a torn tail.
    for (int j = 0; j < 4; ++j)
      ASSERT_OK(s->Flush(VALUE(s->Append({.payload = Payload(600, j)}))));
    ASSERT_OK(log->Close());
  }
  Damage(&storage, opts, ra2, format::kFragmentHeaderSize + 50);
  auto log = VALUE(Log::Open(&storage, opts, false));
  Stream* s = VALUE(log->OpenStream("tm", false));
  auto newest = s->ReadRestartArea();
  ASSERT_FALSE(newest.ok());
  EXPECT_TRUE(newest.status().IsCorruption()) << newest.status().ToString();
  EXPECT_NE(newest.status().message().find("tm"), std::string::npos) << newest.status().message();
  auto prev = VALUE(s->ReadPreviousRestartArea(ra2));
  EXPECT_EQ(prev.lsn, ra1);
  EXPECT_TRUE(prev.payload == Payload(64, 1));
  // A scan over the damage reports it, naming the stream and LSN.
  Status error;
  auto all = ReadEverything(log.get(), kInvalidLsn, &error);
  EXPECT_TRUE(error.IsCorruption()) << error.ToString();
  EXPECT_NE(error.message().find("'tm'"), std::string::npos) << error.message();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].lsn, ra1);
  // The records after the damage are still there and appends go after them.
  Lsn next = VALUE(s->Append({.payload = Payload(5, 5)}));
  ASSERT_OK(s->Flush(next));
  EXPECT_TRUE(VALUE(s->Read(next)).payload == Payload(5, 5));
}

TEST(LogBasic, ReopenAfterCleanCloseContinues) {
  FaultInjectingStorage storage;
  Lsn last = 0;
  for (int round = 0; round < 5; ++round) {
    auto log = VALUE(Log::Open(&storage, SmallOptions(2, 16)));
    Stream* s = VALUE(log->OpenStream("s"));
    EXPECT_EQ(s->last_lsn(), last);
    for (int i = 0; i < 3; ++i) {
      Lsn lsn = VALUE(s->Append({.type = 1, .payload = Payload(100 * round + i, round)}));
      EXPECT_GT(lsn, last);
      last = lsn;
    }
    ASSERT_OK(log->Close());
  }
  auto log = VALUE(Log::Open(&storage, SmallOptions(2, 16)));
  EXPECT_EQ(ReadEverything(log.get()).size(), 15u);
}

TEST(LogBasic, TornBaseFileCopyLeavesTheOther) {
  for (int slot = 0; slot < 2; ++slot) {
    FaultInjectingStorage storage;
    Lsn ra;
    {
      auto log = VALUE(Log::Open(&storage, SmallOptions()));
      Stream* s = VALUE(log->OpenStream("tm"));
      ra = VALUE(s->WriteRestartArea(Payload(10, 1)));
      ASSERT_OK(log->Close());
    }
    auto base = storage.Contents("ktmfs-log.base");
    ASSERT_GE(base.size(), 2u * 65536);
    // Tear one copy: garbage over its second half.
    for (size_t i = 0; i < 200; ++i)
      base[slot * 65536 + 20 + i] ^= std::byte{0x5a};
    storage.SetContents("ktmfs-log.base", base);
    auto log = VALUE(Log::Open(&storage, SmallOptions(), false));
    Stream* s = VALUE(log->OpenStream("tm", false));
    EXPECT_EQ(VALUE(s->ReadRestartArea()).lsn, ra);
  }
}

TEST(LogBasic, BothBaseCopiesBadIsAnError) {
  FaultInjectingStorage storage;
  {
    auto log = VALUE(Log::Open(&storage, SmallOptions()));
    ASSERT_OK(log->Close());
  }
  auto base = storage.Contents("ktmfs-log.base");
  base[30] ^= std::byte{1};
  base[65536] ^= std::byte{1};  // the second copy's magic: no header at all
  storage.SetContents("ktmfs-log.base", base);
  auto log = Log::Open(&storage, SmallOptions(), false);
  ASSERT_FALSE(log.ok());
  EXPECT_TRUE(log.status().IsCorruption()) << log.status().ToString();
  // Each copy's own reason, with where it is: what an administrator needs to decide.
  const std::string m = log.status().message();
  EXPECT_NE(m.find("copy 1 at offset 0: base file checksum mismatch"), std::string::npos) << m;
  EXPECT_NE(m.find("copy 2 at offset 65536: no base file header"), std::string::npos) << m;
}

TEST(LogBasic, AnExistingLogKeepsItsOwnGeometry) {
  FaultInjectingStorage storage;
  Lsn lsn;
  {
    auto log = VALUE(Log::Open(&storage, SmallOptions()));
    Stream* s = VALUE(log->OpenStream("s"));
    lsn = VALUE(s->Append({.type = 1, .payload = Payload(2000, 1)}));
    ASSERT_OK(log->Close());
  }
  LogOptions other;  // 4 KiB blocks, 4 MiB containers: ignored for an existing log
  auto log = VALUE(Log::Open(&storage, other, false));
  Stream* s = VALUE(log->OpenStream("s", false));
  EXPECT_TRUE(VALUE(s->Read(lsn)).payload == Payload(2000, 1));
  EXPECT_EQ(log->end_lsn() % 512, 0u);
  EXPECT_EQ(storage.Contents("container.000000").size(), 8192u);
}

TEST(LogBasic, BadOptionsAreRefused) {
  FaultInjectingStorage storage;
  LogOptions o = SmallOptions();
  o.block_size = 1000;
  EXPECT_EQ(Log::Open(&storage, o).status().code(), EINVAL);
  o = SmallOptions();
  o.container_size = 5000;
  EXPECT_EQ(Log::Open(&storage, o).status().code(), EINVAL);
  o = SmallOptions(4, 2);
  EXPECT_EQ(Log::Open(&storage, o).status().code(), EINVAL);
}

TEST(LogBasic, OpenWithoutCreateOnEmptyStorageIsNotFound) {
  FaultInjectingStorage storage;
  EXPECT_TRUE(Log::Open(&storage, SmallOptions(), false).status().IsNotFound());
}

}  // namespace
}  // namespace ktmfs::log

#include "fs/tx/records.h"

#include <gtest/gtest.h>

#include <random>

namespace ktmfs::fstx {
namespace {

std::vector<Record> SampleRecords() {
  Guid tx = Guid::Random();
  std::vector<Record> out;
  auto op = [&](Op o) {
    Record r;
    r.type = RecordType::kOp;
    r.tx = tx;
    r.op = std::move(o);
    out.push_back(std::move(r));
  };
  op({.kind = OpKind::kCreate,
      .object = ObjectId::New(1),
      .path = "d/f",
      .mode = 0100644,
      .uid = 1000,
      .gid = 1000,
      .staged_file = "n1"});
  op({.kind = OpKind::kMkdir, .object = ObjectId::New(2), .path = "d/sub", .mode = 040755});
  op({.kind = OpKind::kSymlink,
      .object = ObjectId::New(3),
      .path = "l",
      .uid = 1,
      .gid = 2,
      .target = "../x"});
  op({.kind = OpKind::kMknod,
      .object = ObjectId::New(4),
      .path = "fifo",
      .mode = 010600,
      .rdev = 0x801});
  op({.kind = OpKind::kLink, .object = ObjectId::Existing(8, 77), .path = "a", .path2 = "b"});
  op({.kind = OpKind::kUnlink, .object = ObjectId::Existing(8, 78), .path = "gone"});
  op({.kind = OpKind::kRmdir, .object = ObjectId::Existing(8, 79), .path = "emptydir"});
  op({.kind = OpKind::kRename,
      .object = ObjectId::Existing(8, 80),
      .path = "old",
      .path2 = "new",
      .replaced = ObjectId::Existing(8, 81),
      .flags = 1});
  op({.kind = OpKind::kSetattr,
      .object = ObjectId::Existing(8, 82),
      .path = "f",
      .mode = 0600,
      .uid = 5,
      .gid = 6,
      .set_mask = kSetMode | kSetUid | kSetGid | kSetSize | kSetAtime | kSetMtime,
      .size = 1 << 20,
      .atime_ns = -5,
      .mtime_ns = 1'700'000'000'000'000'000});
  op({.kind = OpKind::kSetxattr,
      .object = ObjectId::New(1),
      .path = "d/f",
      .flags = 2,
      .name = "user.k",
      .value = std::string("v\0w", 3)});
  op({.kind = OpKind::kRemovexattr,
      .object = ObjectId::Existing(8, 83),
      .path = "f",
      .name = "user.gone"});
  op({.kind = OpKind::kWriteExtent,
      .object = ObjectId::Existing(8, 84),
      .path = "big",
      .staged_file = "e84",
      .offset = 4096,
      .length = 1 << 30});
  op({.kind = OpKind::kWriteData,
      .object = ObjectId::Existing(8, 85),
      .path = "small",
      .offset = 12,
      .length = 5,
      .data = std::string("a\0b\xff"
                          "c",
                          5)});
  Record p;
  p.type = RecordType::kPrepared;
  p.tx = tx;
  p.op_count = 12;
  p.staged_files = {"n1", "e84"};
  p.objects = {ObjectId::New(1), ObjectId::Existing(8, 84)};
  out.push_back(p);
  for (RecordType t : {RecordType::kCommitted, RecordType::kApplied, RecordType::kAborted}) {
    Record r;
    r.type = t;
    r.tx = tx;
    out.push_back(r);
  }
  // Every op kind carried forward in one record (the ops above, in order).
  Record relogged;
  relogged.type = RecordType::kRelogged;
  relogged.tx = tx;
  for (const Record& r : out)
    if (r.type == RecordType::kOp) relogged.ops.push_back(r.op);
  out.push_back(relogged);
  return out;
}

TEST(FsRecords, EveryKindRoundTrips) {
  for (const Record& r : SampleRecords()) {
    auto bytes = EncodeRecord(r);
    auto back = DecodeRecord(bytes, 42);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, r) << "op " << OpKindName(r.op.kind);
  }
}

// What LogOp's bound counts before a change stages anything is what the record will take.
TEST(FsRecords, OpRecordSizeIsTheEncodedSize) {
  for (const Record& r : SampleRecords()) {
    if (r.type != RecordType::kOp) continue;
    EXPECT_EQ(OpRecordSize(r.op), EncodeRecord(r).size()) << OpKindName(r.op.kind);
  }
}

TEST(FsRecords, EveryTruncationIsCorruptionNamingLsnAndTransaction) {
  for (const Record& r : SampleRecords()) {
    auto bytes = EncodeRecord(r);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto back = DecodeRecord(std::span(bytes.data(), n), 0x1234);
      ASSERT_FALSE(back.ok()) << "prefix " << n << " of " << bytes.size();
      EXPECT_TRUE(back.status().IsCorruption());
      EXPECT_NE(back.status().message().find("0x1234"), std::string::npos);
      if (n >= 18) {
        EXPECT_NE(back.status().message().find(r.tx.ToString()), std::string::npos)
            << back.status().message();
      }
    }
  }
}

TEST(FsRecords, TrailingBytesUnknownVersionAndTypeAreCorruption) {
  Record r = SampleRecords().front();
  auto bytes = EncodeRecord(r);
  auto longer = bytes;
  longer.push_back(std::byte{0});
  EXPECT_TRUE(DecodeRecord(longer, 1).status().IsCorruption());
  auto version = bytes;
  version[0] = std::byte{99};
  EXPECT_TRUE(DecodeRecord(version, 1).status().IsCorruption());
  auto type = bytes;
  type[1] = std::byte{200};
  EXPECT_TRUE(DecodeRecord(type, 1).status().IsCorruption());
  auto kind = bytes;
  kind[18] = std::byte{0};  // op kind 0 does not exist
  EXPECT_TRUE(DecodeRecord(kind, 1).status().IsCorruption());
}

// Logs written before version 2 stay readable; the op version 2 added is not valid in them,
// nor the record version 3 added.
TEST(FsRecords, VersionOneRecordsAreReadAndCannotHoldWriteData) {
  for (const Record& r : SampleRecords()) {
    auto bytes = EncodeRecord(r);
    bytes[0] = std::byte{1};
    auto back = DecodeRecord(bytes, 1);
    if ((r.type == RecordType::kOp && r.op.kind == OpKind::kWriteData) ||
        r.type == RecordType::kRelogged) {
      EXPECT_TRUE(back.status().IsCorruption());
    } else {
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(*back, r);
    }
  }
}

// Version 2 records are read; a relogged record is valid only from version 3 on.
TEST(FsRecords, VersionTwoRecordsAreReadAndCannotBeRelogged) {
  for (const Record& r : SampleRecords()) {
    auto bytes = EncodeRecord(r);
    bytes[0] = std::byte{2};
    auto back = DecodeRecord(bytes, 7);
    if (r.type == RecordType::kRelogged) {
      EXPECT_TRUE(back.status().IsCorruption());
      EXPECT_NE(back.status().message().find("relogged record of version 2"), std::string::npos)
          << back.status().message();
    } else {
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(*back, r);
    }
  }
}

// Random bytes, and valid records with random bytes flipped: the decoder must return (a value
// or a Corruption) without crashing; ASan/UBSan builds check it reads nothing out of bounds.
TEST(FsRecords, FuzzedInputNeverCrashes) {
  std::mt19937_64 rng(12345);
  auto samples = SampleRecords();
  int decoded = 0, corrupt = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> bytes;
    if (i % 2 == 0) {
      bytes.resize(rng() % 200);
      for (auto& b : bytes)
        b = static_cast<std::byte>(rng());
      if (!bytes.empty()) bytes[0] = std::byte{kRecordFormatVersion};
    } else {
      bytes = EncodeRecord(samples[rng() % samples.size()]);
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f)
        bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
      if (rng() % 3 == 0) bytes.resize(rng() % (bytes.size() + 1));
    }
    auto r = DecodeRecord(bytes, static_cast<log::Lsn>(i + 1));
    if (r.ok()) {
      ++decoded;
      // Whatever decodes must encode back to the same bytes: nothing was half-read. (An older
      // version's record is written back as the current version, the rest unchanged.)
      auto again = EncodeRecord(*r);
      ASSERT_FALSE(again.empty());
      again[0] = bytes[0];
      EXPECT_EQ(again, bytes);
    } else {
      ++corrupt;
      EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    }
  }
  EXPECT_GT(corrupt, 0);
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace ktmfs::fstx

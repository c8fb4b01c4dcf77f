// A read-only open (what ktmfs-log uses) reads everything a normal open would and writes not a
// byte, even when the tail is torn.
#include <gtest/gtest.h>

#include <map>

#include "log/format.h"
#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;
using testing::SmallOptions;

std::map<std::string, std::vector<std::byte>> Snapshot(FaultInjectingStorage* storage) {
  std::map<std::string, std::vector<std::byte>> files;
  for (const auto& name : VALUE(storage->List()))
    files[name] = storage->Contents(name);
  return files;
}

TEST(LogReadOnly, ReadsEverythingAndWritesNothing) {
  FaultInjectingStorage storage;
  LogOptions opts = SmallOptions(2, 8);
  std::vector<Lsn> appended;
  {
    auto log = VALUE(Log::Open(&storage, opts));
    Stream* s = VALUE(log->OpenStream("tm"));
    Stream* t = VALUE(log->OpenStream("rm"));
    for (int i = 0; i < 20; ++i) {
      Stream* which = i % 2 ? s : t;
      appended.push_back(VALUE(which->Append({.type = 7, .payload = Payload(300 + i * 40, i)})));
    }
    ASSERT_OK(s->Flush(appended.back()));
    VALUE(s->WriteRestartArea(Payload(16, 99)));
    // Left unflushed: a crash loses it, so the reopened tail needs cutting.
    VALUE(t->Append({.type = 7, .payload = Payload(900, 77)}));
  }
  storage.CrashNow(CrashMode::kTearLastWrite);
  storage.Restart();
  auto before = Snapshot(&storage);
  const uint64_t events = storage.events();

  opts.read_only = true;
  auto log = VALUE(Log::Open(&storage, opts, false));
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), appended.size() + 1);  // and the restart area
  for (size_t i = 0; i < appended.size(); ++i)
    EXPECT_EQ(all[i].lsn, appended[i]);
  Stream* s = VALUE(log->OpenStream("tm", false));
  EXPECT_TRUE(s->ReadRestartArea().ok());

  EXPECT_EQ(s->Append({.type = 7, .payload = Payload(10, 1)}).status().code(), EROFS);
  EXPECT_EQ(log->OpenStream("new").status().code(), EROFS);
  EXPECT_EQ(s->WriteRestartArea(Payload(8, 1)).status().code(), EROFS);
  EXPECT_EQ(s->SetBaseLsn(s->last_lsn()).code(), EROFS);
  EXPECT_TRUE(log->Flush().ok());  // nothing new to make durable
  EXPECT_TRUE(log->Close().ok());

  EXPECT_EQ(storage.events(), events);
  EXPECT_TRUE(Snapshot(&storage) == before);
}

TEST(LogReadOnly, NeverCreatesALog) {
  FaultInjectingStorage storage;
  LogOptions opts = SmallOptions();
  opts.read_only = true;
  auto log = Log::Open(&storage, opts, /*create_if_missing=*/true);
  EXPECT_TRUE(log.status().IsNotFound()) << log.status().ToString();
  EXPECT_TRUE(VALUE(storage.List()).empty());
}

}  // namespace
}  // namespace ktmfs::log

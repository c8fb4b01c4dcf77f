// Many threads appending to several streams and waiting for their own records (group commit).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "tests/log/log_test_util.h"

namespace ktmfs::log {
namespace {

using testing::Payload;
using testing::ReadEverything;

TEST(LogConcurrency, ConcurrentCommittersAllGetDurableRecords) {
  FaultInjectingStorage storage;
  LogOptions opts = testing::SmallOptions(2, 256);
  auto log = VALUE(Log::Open(&storage, opts));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  std::vector<Stream*> streams;
  for (int i = 0; i < 3; ++i)
    streams.push_back(VALUE(log->OpenStream("s" + std::to_string(i))));
  std::vector<std::vector<Lsn>> lsns(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Stream* s = streams[t % streams.size()];
      for (int i = 0; i < kPerThread; ++i) {
        auto payload = Payload((t * 131 + i * 17) % 1500, uint64_t(t) * 1000 + i);
        auto lsn = s->Append({.type = uint16_t(t), .payload = payload});
        if (!lsn.ok() || !s->Flush(*lsn).ok() || log->flushed_lsn() <= *lsn) {
          failures++;
          return;
        }
        lsns[t].push_back(*lsn);
      }
    });
  }
  for (auto& th : threads)
    th.join();
  ASSERT_EQ(failures.load(), 0);
  // Every record is there once, in LSN order, with its payload.
  std::map<Lsn, std::pair<int, int>> expected;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i)
      expected[lsns[t][i]] = {t, i};
  }
  auto all = ReadEverything(log.get());
  ASSERT_EQ(all.size(), expected.size());
  auto it = expected.begin();
  for (const Record& r : all) {
    ASSERT_EQ(r.lsn, it->first);
    auto [t, i] = it->second;
    EXPECT_EQ(r.type, t);
    EXPECT_TRUE(r.payload == Payload((t * 131 + i * 17) % 1500, uint64_t(t) * 1000 + i));
    ++it;
  }
  // Each stream's chain links its own records.
  for (Stream* s : streams) {
    auto back = s->ReadBackward(s->last_lsn(), Stream::Chain::kStreamPrevious);
    Record r;
    size_t n = 0;
    while (VALUE(back->Next(&r))) {
      EXPECT_EQ(r.stream, s->id());
      n++;
    }
    size_t want = 0;
    for (int t = 0; t < kThreads; ++t) {
      if (streams[t % streams.size()] == s) want += kPerThread;
    }
    EXPECT_EQ(n, want);
  }
  LogStats st = log->stats();
  EXPECT_EQ(st.appends, uint64_t(kThreads * kPerThread));
  // At most one sync per flush request, plus one per container boundary a flush crossed.
  EXPECT_LE(st.syncs, st.flushes_requested + log->end_lsn() / opts.container_size);
}

TEST(LogConcurrency, LargeRecordsCopiedConcurrentlyArriveWhole) {
  FaultInjectingStorage storage;
  LogOptions opts = testing::SmallOptions(2, 64);
  opts.container_size = 256 << 10;
  auto log = VALUE(Log::Open(&storage, opts));
  Stream* s = VALUE(log->OpenStream("big"));
  constexpr int kThreads = 6;
  constexpr int kPerThread = 40;
  std::vector<std::vector<std::pair<Lsn, size_t>>> got(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        size_t size = (i % 3 == 0) ? 100 : 9000 + size_t(t * 997 + i * 131) % 30000;
        auto lsn = s->Append({.type = 1, .payload = Payload(size, uint64_t(t * 1000 + i))});
        if (!lsn.ok()) {
          failures++;
          return;
        }
        got[t].push_back({*lsn, size});
        if (i % 4 == 3 && !s->Flush(*lsn).ok()) failures++;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  ASSERT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      auto [lsn, size] = got[t][i];
      auto r = VALUE(s->Read(lsn));
      ASSERT_TRUE(r.payload == Payload(size, uint64_t(t * 1000 + i))) << t << "/" << i;
    }
  }
}

TEST(LogConcurrency, ReadersRunWhileWritersAppend) {
  FaultInjectingStorage storage;
  auto log = VALUE(Log::Open(&storage, testing::SmallOptions(2, 256)));
  Stream* s = VALUE(log->OpenStream("s"));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread writer([&] {
    for (int i = 0; i < 300; ++i) {
      auto lsn = s->Append({.type = 1, .payload = Payload(i % 900, i)});
      if (!lsn.ok()) bad++;
      if (i % 7 == 0 && lsn.ok() && !s->Flush(*lsn).ok()) bad++;
    }
    stop = true;
  });
  std::thread reader([&] {
    while (!stop) {
      Status error;
      auto all = ReadEverything(log.get(), kInvalidLsn, &error);
      if (!error.ok()) bad++;
      for (size_t i = 0; i < all.size(); ++i) {
        if (!(all[i].payload == Payload(i % 900, i))) bad++;
      }
    }
  });
  writer.join();
  reader.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace ktmfs::log

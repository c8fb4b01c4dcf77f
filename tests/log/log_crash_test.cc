// Crash tests: a deterministic random workload runs on the fault-injecting storage, which
// crashes at every write and sync (event) in turn, in each crash mode; then the log is reopened
// and must hold every flushed record, nothing that was not appended, no gap followed by later
// records, and must accept and keep new appends (reopened twice, so leftovers of the crashed
// session cannot come back after later writes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

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

struct Model {
  std::vector<Appended> appended;
  size_t flushed = 0;  // appended[0, flushed) are durable
  std::map<StreamId, Lsn> base;
  std::vector<std::byte> pending_restart;  // a restart area whose write failed half-way
  bool has_pending_restart = false;
};

struct Workload {
  bool truncate = false;  // advance base LSNs so the ring wraps and grows
  int ops = 30;
  uint32_t max_containers = 16;
  bool large = false;  // also records of 8 KiB and more, which their appenders seal
};

size_t PickSize(std::mt19937_64& rng, bool large) {
  switch (rng() % (large ? 6 : 5)) {
    case 0:
      return rng() % 40;
    case 1:
      return 400 + rng() % 100;  // around one fragment
    case 2:
      return 900 + rng() % 200;
    case 3:
      return 3000 + rng() % 2000;  // several blocks
    case 4:
      return 100 + rng() % 200;
    default:
      return (8 << 10) + rng() % 6000;
  }
}

// Runs until the first error (the crash) or the end.
void RunWorkload(Storage* storage, uint64_t seed, const Workload& w, Model* m) {
  auto log = Log::Open(storage, SmallOptions(2, w.max_containers));
  if (!log.ok()) return;
  auto a = (*log)->OpenStream("a");
  if (!a.ok()) return;
  auto b = (*log)->OpenStream("b");
  if (!b.ok()) return;
  Stream* streams[2] = {*a, *b};
  std::mt19937_64 rng(seed);
  for (int i = 0; i < w.ops; ++i) {
    Stream* s = streams[rng() % 2];
    int op = int(rng() % 10);
    if (op < 6) {
      auto payload = Payload(PickSize(rng, w.large), rng());
      auto lsn = s->Append({.type = uint16_t(op), .payload = payload});
      if (!lsn.ok()) return;
      m->appended.push_back({*lsn, s->id(), uint16_t(op), payload});
    } else if (op < 9) {
      if (!s->Flush(kMaxLsn).ok()) return;
      m->flushed = m->appended.size();
      if (w.truncate && m->flushed > 2) {
        // Keep only the last two flushed records of each stream.
        for (Stream* t : streams) {
          int seen = 0;
          for (size_t k = m->flushed; k-- > 0;) {
            if (m->appended[k].stream == t->id() && ++seen == 2) {
              if (t->SetBaseLsn(m->appended[k].lsn).ok()) m->base[t->id()] = m->appended[k].lsn;
              break;
            }
          }
        }
      }
    } else {
      auto payload = Payload(rng() % 300, rng());
      auto lsn = s->WriteRestartArea(payload);
      if (!lsn.ok()) {
        m->pending_restart = payload;
        m->has_pending_restart = true;
        return;
      }
      m->appended.push_back({*lsn, s->id(), kRestartAreaRecordType, payload});
      m->flushed = m->appended.size();
    }
  }
}

bool Same(const Record& r, const Appended& a) {
  return r.lsn == a.lsn && r.stream == a.stream && r.type == a.type && r.payload == a.payload;
}

// Checks the recovered records against the model; returns how many model records survived
// (the index after the last one), for the second round.
void Verify(const std::vector<Record>& all, const Model& m, const std::string& where,
            size_t* first_out, size_t* end_out) {
  Lsn min_base = kMaxLsn;
  for (auto [id, lsn] : m.base)
    min_base = std::min(min_base, lsn);
  if (m.base.size() < 2) min_base = 0;
  size_t must_first = m.flushed;  // the first flushed record that must still be there
  for (size_t k = 0; k < m.flushed; ++k) {
    if (m.appended[k].lsn >= min_base) {
      must_first = k;
      break;
    }
  }
  size_t i = m.appended.size();
  if (!all.empty()) {
    for (size_t k = 0; k < m.appended.size(); ++k) {
      if (m.appended[k].lsn == all[0].lsn) i = k;
    }
  }
  size_t n = all.size();
  bool extra_restart = false;
  if (n > 0 && i + n == m.appended.size() + 1 && m.has_pending_restart &&
      all.back().type == kRestartAreaRecordType && all.back().payload == m.pending_restart) {
    extra_restart = true;  // the failed restart area made it to disk after all
    n--;
  }
  if (all.empty()) {
    i = 0;
  } else {
    ASSERT_LT(i, m.appended.size() + (extra_restart ? 1 : 0))
        << where << ": first record LSN " << all[0].lsn << " was never appended";
    ASSERT_LE(i + n, m.appended.size()) << where << ": more records than appended";
    for (size_t k = 0; k < n; ++k) {
      ASSERT_TRUE(Same(all[k], m.appended[i + k]))
          << where << ": record " << k << " (LSN " << all[k].lsn << ") is not appended record "
          << i + k << " (LSN " << m.appended[i + k].lsn << ")";
    }
  }
  if (must_first < m.flushed) {
    ASSERT_LE(i, must_first) << where << ": flushed records before LSN "
                             << m.appended[must_first].lsn << " are missing";
    ASSERT_GE(i + n, m.flushed) << where << ": flushed record " << i + n << " of " << m.flushed
                                << " is missing";
  }
  *first_out = i;
  *end_out = i + n;
}

// What the cases covered, so a change that stops exercising a path shows.
struct Coverage {
  uint64_t cases = 0;
  uint64_t lost_unflushed = 0;  // cases where appended but unflushed records were lost
  uint64_t cut_in_block = 0;
  uint64_t gaps_skipped = 0;
};
Coverage coverage;

void CrashCase(uint64_t seed, const Workload& w, uint64_t event, CrashMode mode) {
  const std::string where = "seed " + std::to_string(seed) + " event " + std::to_string(event) +
                            " mode " + std::to_string(int(mode));
  FaultInjectingStorage storage(seed * 31 + event);
  storage.CrashAtEvent(event, mode);
  Model m;
  RunWorkload(&storage, seed, w, &m);
  if (!storage.crashed()) storage.CrashNow(mode);
  storage.Restart();

  size_t first = 0, end = 0;
  std::vector<Appended> second;
  {
    auto log = Log::Open(&storage, SmallOptions(2, w.max_containers));
    ASSERT_TRUE(log.ok()) << where << ": " << log.status().ToString();
    Status error;
    auto all = ReadEverything(log->get(), kInvalidLsn, &error);
    ASSERT_TRUE(error.ok()) << where << ": " << error.ToString();
    Verify(all, m, where, &first, &end);
    // A crash is never damage: only torn tails.
    ASSERT_EQ((*log)->stats().damaged_ranges, 0u) << where;
    coverage.cases++;
    coverage.lost_unflushed += end < m.appended.size();
    coverage.cut_in_block += (*log)->stats().torn_tail_cut_in_block;
    // New appends go after what survived and stay.
    Stream* a = VALUE((*log)->OpenStream("a"));
    if (w.truncate) {
      // Make room: nothing old is needed any more.
      for (const auto& info : (*log)->Streams()) {
        Stream* t = VALUE((*log)->OpenStream(info.name));
        ASSERT_OK(t->SetBaseLsn((*log)->end_lsn()));
      }
    }
    for (int k = 0; k < 3; ++k) {
      auto payload = Payload(50 + k * 300, seed + k);
      auto lsn = a->Append({.type = 9, .payload = payload});
      ASSERT_TRUE(lsn.ok()) << where << ": " << lsn.status().ToString();
      ASSERT_OK(a->Flush(*lsn));
      second.push_back({*lsn, a->id(), 9, payload});
    }
    all = ReadEverything(log->get());
    ASSERT_GE(all.size(), 3u) << where;
  }
  auto log = Log::Open(&storage, SmallOptions(2, w.max_containers), false);
  ASSERT_TRUE(log.ok()) << where << ": " << log.status().ToString();
  Status error;
  auto all = ReadEverything(log->get(), kInvalidLsn, &error);
  ASSERT_TRUE(error.ok()) << where << " (second open): " << error.ToString();
  ASSERT_EQ((*log)->stats().damaged_ranges, 0u) << where << " (second open)";
  coverage.gaps_skipped += (*log)->stats().cut_gaps_skipped;
  ASSERT_GE(all.size(), 3u) << where;
  for (size_t k = 0; k < 3; ++k) {
    ASSERT_TRUE(Same(all[all.size() - 3 + k], second[k]))
        << where << " (second open): new record " << k << " is wrong or missing";
  }
  // Before the new records: the same survivors as after the first open (a prefix of them if
  // truncation dropped some), nothing else.
  size_t old = all.size() - 3;
  size_t survivors = end - first;
  if (old == survivors + 1) {
    ASSERT_EQ(all[old - 1].type, kRestartAreaRecordType) << where << " (second open)";
    old--;
  }
  ASSERT_LE(old, survivors) << where << " (second open): records came back";
  for (size_t k = 0; k < old; ++k) {
    ASSERT_TRUE(Same(all[k], m.appended[end - old + k]))
        << where << " (second open): record " << k << " differs";
  }
}

// KTMFS_CRASH_SEEDS=N runs N times as many seeds, for a longer soak.
uint64_t SeedScale() {
  const char* v = std::getenv("KTMFS_CRASH_SEEDS");
  return v ? std::max<uint64_t>(1, std::strtoull(v, nullptr, 10)) : 1;
}

void CrashEverywhere(const Workload& w, uint64_t seeds) {
  coverage = {};
  seeds *= SeedScale();
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    FaultInjectingStorage dry(seed);
    Model m;
    RunWorkload(&dry, seed, w, &m);
    const uint64_t events = dry.events();
    for (uint64_t e = 1; e <= events + 1; ++e) {
      for (auto mode :
           {CrashMode::kDropUnsynced, CrashMode::kTearLastWrite, CrashMode::kKeepRandomUnsynced}) {
        CrashCase(seed, w, e, mode);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

void ExpectCoverage() {
  std::printf(
      "crash cases: %llu, unflushed records lost in %llu, tail cut inside a block in %llu, cut "
      "gaps skipped on the second open: %llu\n",
      (unsigned long long)coverage.cases, (unsigned long long)coverage.lost_unflushed,
      (unsigned long long)coverage.cut_in_block, (unsigned long long)coverage.gaps_skipped);
  EXPECT_GT(coverage.cases, 1000u);
  EXPECT_GT(coverage.lost_unflushed, 0u);
  EXPECT_GT(coverage.cut_in_block, 0u);
  EXPECT_GT(coverage.gaps_skipped, 0u);
}

TEST(LogCrash, EveryEventEveryMode) {
  CrashEverywhere({}, 25);
  ExpectCoverage();
}

TEST(LogCrash, EveryEventEveryModeWithTruncationAndGrowth) {
  CrashEverywhere({.truncate = true, .ops = 60, .max_containers = 4}, 15);
  ExpectCoverage();
}

TEST(LogCrash, EveryEventEveryModeWithLargeRecords) {
  CrashEverywhere({.ops = 30, .max_containers = 64, .large = true}, 15);
  std::printf("crash cases: %llu, unflushed records lost in %llu\n",
              (unsigned long long)coverage.cases, (unsigned long long)coverage.lost_unflushed);
  EXPECT_GT(coverage.cases, 1000u);
  EXPECT_GT(coverage.lost_unflushed, 0u);
}

TEST(LogCrash, FailedWriteIsReportedAndNothingFlushedIsLost) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    FaultInjectingStorage dry(seed);
    Model dm;
    RunWorkload(&dry, seed, {}, &dm);
    for (uint64_t e = 1; e <= dry.events(); ++e) {
      FaultInjectingStorage storage(seed);
      storage.FailAtEvent(e, e % 2 ? EIO : ENOSPC);
      Model m;
      RunWorkload(&storage, seed, {}, &m);
      storage.CrashNow(CrashMode::kDropUnsynced);
      storage.Restart();
      auto log = Log::Open(&storage, SmallOptions(2, 16));
      ASSERT_TRUE(log.ok()) << log.status().ToString();
      size_t first, end;
      Verify(ReadEverything(log->get()), m, "fail seed " + std::to_string(seed), &first, &end);
      if (HasFatalFailure()) return;
    }
  }
}

// Committers on several threads (and up to four flushes in flight) when the crash comes: the
// order of events varies from run to run, so this checks the invariants only: every record
// whose Flush succeeded is there, and what is there is a prefix, in LSN order, of what was
// appended.
TEST(LogCrash, ConcurrentCommittersCrashAnywhere) {
  std::mt19937_64 rng(77);
  for (int iter = 0; iter < 120; ++iter) {
    const auto mode = CrashMode(iter % 3);
    LogOptions opts = SmallOptions(2, 64);
    opts.max_inflight_flushes = 1 + iter % 4;
    FaultInjectingStorage storage(iter);
    const uint64_t crash_at = 8 + rng() % 150;
    storage.CrashAtEvent(crash_at, mode);
    struct Entry {
      Lsn lsn;
      std::vector<std::byte> payload;
      bool acked;
    };
    std::vector<Entry> entries;
    std::mutex mu;
    {
      auto log = Log::Open(&storage, opts);
      if (log.ok()) {
        auto stream = (*log)->OpenStream("s");
        if (stream.ok()) {
          std::vector<std::thread> threads;
          for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&, t] {
              for (int i = 0; i < 25; ++i) {
                auto payload =
                    Payload((t * 97 + i * 31) % 1200, uint64_t(iter * 1000 + t * 100 + i));
                auto lsn = (*stream)->Append({.type = 1, .payload = payload});
                if (!lsn.ok()) return;
                bool acked = (*stream)->Flush(*lsn).ok();
                std::lock_guard lock(mu);
                entries.push_back({*lsn, payload, acked});
                if (!acked) return;
              }
            });
          }
          for (auto& th : threads)
            th.join();
        }
      }
    }
    if (!storage.crashed()) storage.CrashNow(mode);
    storage.Restart();
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.lsn < b.lsn; });
    auto log = Log::Open(&storage, opts);
    ASSERT_TRUE(log.ok()) << "iter " << iter << ": " << log.status().ToString();
    Status error;
    auto all = ReadEverything(log->get(), kInvalidLsn, &error);
    ASSERT_TRUE(error.ok()) << "iter " << iter << ": " << error.ToString();
    ASSERT_LE(all.size(), entries.size()) << "iter " << iter;
    for (size_t k = 0; k < all.size(); ++k) {
      ASSERT_EQ(all[k].lsn, entries[k].lsn) << "iter " << iter << ": record " << k;
      ASSERT_TRUE(all[k].payload == entries[k].payload) << "iter " << iter << ": record " << k;
    }
    for (size_t k = all.size(); k < entries.size(); ++k) {
      ASSERT_FALSE(entries[k].acked)
          << "iter " << iter << ": flushed LSN " << entries[k].lsn << " is missing";
    }
    Stream* s = VALUE((*log)->OpenStream("s"));
    Lsn lsn = VALUE(s->Append({.type = 2, .payload = Payload(10, 1)}));
    ASSERT_OK(s->Flush(lsn));
  }
}

}  // namespace
}  // namespace ktmfs::log

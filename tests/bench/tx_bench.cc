// Transaction benchmark driver: measures one row of tests/bench/tx.sh and prints its number on
// stdout (progress and errors on stderr). tx.sh runs the rows side by side and makes the table.
//
//   tx_bench small ktmfs|ktmfs-script|posix|sqlite DIR CLIENTS SECONDS   -> commits/s
//       CLIENTS threads each commit 4 KiB to each of their own two files, over and over, for
//       SECONDS; afterwards every client's files must hold its last commit. ktmfs-script: as a
//       script does it (the control xattrs, each file truncated and written whole).
//   tx_bench big ktmfs|native DIR BYTES new|existing         -> seconds
//       one file of BYTES (suffix K, M or G) written in 1 MiB writes, until durable.
//   tx_bench reader DIR BYTES commit|idle [inside|same|same-inside] -> milliseconds
//       the worst round of a reader of an unrelated file (stat, then open, read 4 KiB, close):
//       while one transaction's commit overwrites an existing file of BYTES, or for 3 s of no
//       commit at all. "inside": the reader runs inside a transaction of its own, and the
//       commit overwrites all of the file but its first 4 KiB (so apply writes it in place).
//       "same": the reader, outside transactions, reads the file the commit writes in place
//       instead (with no commit: the unrelated file, as there is no such file then).
//       "same-inside": that reader, inside a transaction of its own.
//   tx_bench probe MOUNT                                     -> whether ktmfs serves transactions
//
// DIR must be an empty directory (on the mount for ktmfs). Exit status: 0 measured, 1 failed,
// 2 bad usage, 3 the mount does not serve transactions (the row cannot be measured).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/bench/tx_big_write.h"
#include "tests/bench/tx_pair_writers.h"

namespace ktmfs::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoTransactions = 3;
constexpr int kWarmupCommits = 2;

int Usage() {
  std::fprintf(stderr,
               "usage: tx_bench small ktmfs|ktmfs-script|posix|sqlite DIR CLIENTS SECONDS\n"
               "       tx_bench big ktmfs|native DIR BYTES new|existing\n"
               "       tx_bench reader DIR BYTES commit|idle [inside|same|same-inside]\n"
               "       tx_bench probe MOUNT\n");
  return kExitUsage;
}

int Fail(const std::string& error) {
  std::fprintf(stderr, "tx_bench: %s\n", error.c_str());
  return kExitFailed;
}

// Every ktmfs row checks first, so that a build without transactions reports why instead of
// failing on the first commit.
int ProbeOrExit(const std::string& mount) {
  std::string error = ProbeKtmfsTransactions(mount);
  if (error.empty()) return 0;
  std::fprintf(stderr, "tx_bench: %s\n", error.c_str());
  return kExitNoTransactions;
}

bool ParseCount(const char* text, uint64_t* out) {
  char* end = nullptr;
  unsigned long long n = std::strtoull(text, &end, 10);
  if (end == text) return false;
  uint64_t unit = 1;
  switch (*end) {
    case 'K':
      unit = uint64_t{1} << 10;
      ++end;
      break;
    case 'M':
      unit = uint64_t{1} << 20;
      ++end;
      break;
    case 'G':
      unit = uint64_t{1} << 30;
      ++end;
      break;
    default:
      break;
  }
  if (*end != '\0' || n == 0) return false;
  *out = n * unit;
  return true;
}

// What one client thread did.
struct ClientTally {
  unsigned long commits = 0;  // timed commits; the warmup ones are not counted
  unsigned long last = 0;     // the stamp of its last successful commit
  std::string error;
  std::unique_ptr<PairWriter> writer;
};

int RunSmall(PairSystem system, const std::string& dir, int clients, double seconds) {
  std::string error = PreparePairs(system, dir, clients);
  if (!error.empty()) return Fail(error);
  std::vector<ClientTally> tallies(static_cast<size_t>(clients));
  std::latch ready(clients);
  std::latch go(1);
  Clock::time_point deadline;  // written before go opens, read after
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      ClientTally& t = tallies[static_cast<size_t>(c)];
      t.error = OpenPairWriter(system, dir, c, &t.writer);
      for (int i = 0; i < kWarmupCommits && t.error.empty(); ++i) {
        ++t.last;
        t.error = t.writer->Commit(StampedBlob(c, 0, t.last), StampedBlob(c, 1, t.last));
      }
      ready.count_down();
      go.wait();
      while (t.error.empty() && Clock::now() < deadline) {
        unsigned long next = t.last + 1;
        t.error = t.writer->Commit(StampedBlob(c, 0, next), StampedBlob(c, 1, next));
        if (t.error.empty()) {
          t.last = next;
          ++t.commits;
        }
      }
    });
  }
  ready.wait();
  Clock::time_point start = Clock::now();
  bool all_ready = true;
  for (const ClientTally& t : tallies)
    all_ready = all_ready && t.error.empty();
  deadline = all_ready ? start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(seconds))
                       : start;
  go.count_down();
  for (std::thread& t : threads)
    t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  unsigned long total = 0;
  for (int c = 0; c < clients; ++c) {
    ClientTally& t = tallies[static_cast<size_t>(c)];
    if (!t.error.empty()) return Fail("client " + std::to_string(c) + ": " + t.error);
    Blob a, b;
    error = t.writer->ReadBack(&a, &b);
    if (!error.empty()) return Fail("client " + std::to_string(c) + ": " + error);
    if (a != StampedBlob(c, 0, t.last) || b != StampedBlob(c, 1, t.last)) {
      return Fail("client " + std::to_string(c) + ": its files do not hold its last commit (" +
                  std::to_string(t.last) + ")");
    }
    total += t.commits;
  }
  std::printf("%.1f\n", static_cast<double>(total) / elapsed);
  return 0;
}

int Small(int argc, char** argv) {
  if (argc != 6) return Usage();
  std::string name = argv[2];
  PairSystem system;
  if (name == "ktmfs") {
    system = PairSystem::kKtmfs;
  } else if (name == "ktmfs-script") {
    system = PairSystem::kKtmfsScript;
  } else if (name == "posix") {
    system = PairSystem::kPosix;
  } else if (name == "sqlite") {
    system = PairSystem::kSqlite;
  } else {
    return Usage();
  }
  uint64_t clients = 0;
  char* end = nullptr;
  double seconds = std::strtod(argv[5], &end);
  if (!ParseCount(argv[4], &clients) || clients > 1024 || *end != '\0' || !(seconds > 0)) {
    return Usage();
  }
  if (system == PairSystem::kKtmfs || system == PairSystem::kKtmfsScript) {
    if (int rc = ProbeOrExit(argv[3]); rc != 0) return rc;
  }
  return RunSmall(system, argv[3], static_cast<int>(clients), seconds);
}

int Big(int argc, char** argv) {
  if (argc != 6) return Usage();
  BigWrite w;
  std::string system = argv[2];
  std::string target = argv[5];
  if ((system != "ktmfs" && system != "native") || (target != "new" && target != "existing") ||
      !ParseCount(argv[4], &w.bytes)) {
    return Usage();
  }
  w.ktmfs = system == "ktmfs";
  w.existing = target == "existing";
  w.dir = argv[3];
  if (w.ktmfs) {
    if (int rc = ProbeOrExit(w.dir); rc != 0) return rc;
  }
  double seconds = 0;
  std::string error = TimeBigWrite(w, &seconds);
  if (!error.empty()) return Fail(error);
  std::printf("%.3f\n", seconds);
  return 0;
}

int Reader(int argc, char** argv) {
  if (argc != 5 && argc != 6) return Usage();
  BigWrite w;
  w.ktmfs = true;
  w.existing = true;
  w.dir = argv[2];
  const std::string when = argv[4];
  const std::string where = argc == 6 ? argv[5] : "";
  const bool inside = where == "inside" || where == "same-inside";
  const bool same = where == "same" || where == "same-inside";
  if (!ParseCount(argv[3], &w.bytes) || (when != "commit" && when != "idle") ||
      (!where.empty() && !inside && !same)) {
    return Usage();
  }
  // Inside a transaction, or reading the file itself, the commit changes the file in part:
  // apply then copies its data in place, where a whole rewrite is only renamed into place.
  if (inside || same) w.from = 4096;
  if (int rc = ProbeOrExit(w.dir); rc != 0) return rc;
  const std::string unrelated = w.dir + "/unrelated";
  {
    std::FILE* f = std::fopen(unrelated.c_str(), "we");
    if (f == nullptr) return Fail("create " + unrelated);
    std::vector<char> bytes(8192, 'u');
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    if (std::fclose(f) != 0 || !ok) return Fail("write " + unrelated);
  }
  // The big file exists once the transaction has written it, before the probe starts.
  ReaderProbe probe(same && when == "commit" ? BigWritePath(w) : unrelated, inside ? w.dir : "");
  std::string error;
  if (when == "commit") {
    w.probe = &probe;
    double seconds = 0;
    error = TimeBigWrite(w, &seconds);
  } else {
    probe.Start();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    error = probe.Stop();
  }
  std::remove(unrelated.c_str());
  if (!error.empty()) return Fail(error);
  std::printf("%.2f\n", probe.worst_ms());
  return 0;
}

}  // namespace
}  // namespace ktmfs::bench

int main(int argc, char** argv) {
  using namespace ktmfs::bench;
  if (argc < 2) return Usage();
  std::string mode = argv[1];
  if (mode == "small") return Small(argc, argv);
  if (mode == "big") return Big(argc, argv);
  if (mode == "reader") return Reader(argc, argv);
  if (mode == "probe" && argc == 3) return ProbeOrExit(argv[2]);
  return Usage();
}

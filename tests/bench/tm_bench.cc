// Commit throughput of the transaction manager with resource managers that hold no data (each
// still logs and makes durable what the protocol asks), on a real directory through io_uring.
// Reports commits/s, log syncs per commit, and the ratio against the side-by-side baseline of
// one small write + fdatasync per commit into a preallocated file (one device sync per commit).
//
//   tm_bench [DIR] [SECONDS_PER_ROW]     (DIR defaults to a new directory under /tmp)
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "log/io.h"
#include "log/log.h"
#include "src/transaction_manager.h"

namespace ktmfs::tm {
namespace {

using Clock = std::chrono::steady_clock;

// Logs one small record per notification, as a real RM's prepared/commit records would be.
class EmptyRm : public ResourceManager {
 public:
  EmptyRm(TransactionManager* tm, log::Stream* stream, Guid id)
      : tm_(tm), stream_(stream), id_(id) {}
  void Notify(const Notification& n) override {
    log::Lsn lsn = Mark(static_cast<uint16_t>(n.kind));
    switch (n.kind) {
      case NotificationKind::kPrepare:
        (void)tm_->PrepareComplete(n.transaction, id_, Status::Ok(), lsn);
        break;
      case NotificationKind::kSinglePhaseCommit:
        (void)tm_->SinglePhaseCommitComplete(n.transaction, id_, stream_->Flush(lsn));
        break;
      case NotificationKind::kCommit:
        (void)tm_->CommitComplete(n.transaction, id_, lsn);
        break;
      case NotificationKind::kRollback:
        (void)tm_->RollbackComplete(n.transaction, id_);
        break;
    }
  }

 private:
  log::Lsn Mark(uint16_t type) {
    std::byte payload[16]{};
    log::Stream::AppendArgs a;
    a.type = type + 1;
    a.payload = payload;
    Result<log::Lsn> lsn = stream_->Append(a);
    return lsn.ok() ? *lsn : log::kInvalidLsn;
  }
  TransactionManager* tm_;
  log::Stream* stream_;
  Guid id_;
};

struct Row {
  double commits_per_s = 0;
  double syncs_per_commit = 0;
};

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "tm_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

Row RunTm(const std::string& dir, int rm_count, bool dedicated, int committers, double seconds) {
  std::filesystem::remove_all(dir);
  std::vector<std::unique_ptr<log::Storage>> storages;
  std::vector<std::unique_ptr<log::Log>> logs;
  int log_count = dedicated ? rm_count + 1 : 1;
  for (int i = 0; i < log_count; ++i) {
    auto st = log::OpenUringStorage(dir + "/log" + std::to_string(i));
    if (!st.ok()) Die("opening storage in " + dir, st.status());
    auto lg = log::Log::Open(st->get(), log::LogOptions{}, true);
    if (!lg.ok()) Die("opening log", lg.status());
    storages.push_back(std::move(*st));
    logs.push_back(std::move(*lg));
  }
  auto tm = TransactionManager::Open(logs[0].get());
  if (!tm.ok()) Die("opening TM", tm.status());
  if (Status s = (*tm)->Recover(); !s.ok()) Die("recovering TM", s);
  std::vector<std::unique_ptr<EmptyRm>> rms;
  std::vector<Guid> ids;
  for (int i = 0; i < rm_count; ++i) {
    log::Log* lg = logs[dedicated ? i + 1 : 0].get();
    auto stream = lg->OpenStream("rm" + std::to_string(i));
    if (!stream.ok()) Die("opening RM stream", stream.status());
    ids.push_back(Guid::Random());
    rms.push_back(std::make_unique<EmptyRm>(tm->get(), *stream, ids.back()));
    Status s = (*tm)->RegisterResourceManager(
        {"rm" + std::to_string(i), ids.back(), rms.back().get(), lg});
    if (!s.ok()) Die("registering RM", s);
    s = (*tm)->RecoverResourceManager(ids.back(),
                                      [](const InDoubtEnlistment&) { return Status::Ok(); });
    if (!s.ok()) Die("recovering RM", s);
  }

  auto total_syncs = [&] {
    uint64_t n = 0;
    for (auto& l : logs)
      n += l->stats().syncs;
    return n;
  };
  uint64_t syncs_before = total_syncs();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> commits{0};
  std::vector<std::thread> threads;
  Clock::time_point start = Clock::now();
  for (int t = 0; t < committers; ++t) {
    threads.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        Result<Guid> tx = (*tm)->Begin({});
        if (!tx.ok()) Die("begin", tx.status());
        for (const Guid& rm : ids)
          if (Status s = (*tm)->Enlist(*tx, rm); !s.ok()) Die("enlist", s);
        if (Status s = (*tm)->Commit(*tx); !s.ok()) Die("commit", s);
        commits.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads)
    th.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  Row row;
  row.commits_per_s = commits.load() / elapsed;
  row.syncs_per_commit =
      static_cast<double>(total_syncs() - syncs_before) / std::max<uint64_t>(1, commits.load());
  rms.clear();
  tm->reset();
  for (auto& l : logs)
    (void)l->Close();
  return row;
}

// The alternatives without a TM: one small write + fdatasync per commit, appending to a growing
// file (what a hand-made journal does) or into a preallocated one (the device's sync rate).
double RunBaseline(const std::string& dir, double seconds, bool preallocate) {
  std::filesystem::create_directories(dir);
  std::string path = dir + "/baseline";
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  if (fd < 0) Die("opening " + path, Status::Error(errno, path));
  if (preallocate && (::posix_fallocate(fd, 0, 64 << 20) != 0 || ::fsync(fd) != 0))
    Die("preallocating " + path, Status::Error(errno, path));
  char rec[64] = {};
  uint64_t n = 0;
  Clock::time_point start = Clock::now();
  Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < end) {
    off_t at = static_cast<off_t>((n * sizeof rec) % (64 << 20));
    if (::pwrite(fd, rec, sizeof rec, at) != sizeof rec || ::fdatasync(fd) != 0)
      Die("baseline write", Status::Error(errno, path));
    ++n;
  }
  ::close(fd);
  std::filesystem::remove(path);
  return n / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace
}  // namespace ktmfs::tm

int main(int argc, char** argv) {
  using namespace ktmfs::tm;
  std::string dir;
  bool temporary = argc < 2;
  if (temporary) {
    char tmpl[] = "/tmp/tm_bench.XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    dir = tmpl;
  } else {
    dir = argv[1];
  }
  double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;

  double appending = RunBaseline(dir + "/baseline", seconds, false);
  double baseline = RunBaseline(dir + "/baseline", seconds, true);
  std::printf("baseline, 1 thread, 64-byte write + fdatasync per commit:\n");
  std::printf("  appending to a file:     %8.0f commits/s\n", appending);
  std::printf("  into a preallocated one: %8.0f commits/s  (the \"x baseline\" column)\n\n",
              baseline);
  std::printf("%-28s %11s %12s %14s %12s\n", "commit kind", "committers", "commits/s",
              "syncs/commit", "x baseline");
  struct Case {
    const char* name;
    int rms;
    bool dedicated;
  } cases[] = {{"single-phase, 1 RM", 1, false},
               {"two-phase, 2 RMs", 2, false},
               {"two-phase, 2 RMs, dedicated", 2, true}};
  bool target_met = true;
  for (const Case& c : cases) {
    for (int committers : {1, 16}) {
      Row r = RunTm(dir + "/tm", c.rms, c.dedicated, committers, seconds);
      std::printf("%-28s %11d %12.0f %14.3f %12.2f\n", c.name, committers, r.commits_per_s,
                  r.syncs_per_commit, r.commits_per_s / baseline);
      if (c.rms == 1 && committers == 16 && r.syncs_per_commit >= 0.25) target_met = false;
    }
  }
  std::printf("\ntarget: 16 concurrent single-phase commits < 0.25 syncs per commit: %s\n",
              target_met ? "met" : "NOT met");
  if (temporary) std::filesystem::remove_all(dir);
  return 0;
}

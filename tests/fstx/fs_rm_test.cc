#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <thread>

#include "fs/tx/fs_resource_manager.h"
#include "log/fault_storage.h"
#include "tests/fstx/temp_dir.h"
#include "tests/fstx/tree_snapshot.h"

namespace ktmfs::fstx {
namespace {

std::span<const std::byte> B(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

void BuildTree(const std::string& root) {
  ::mkdir(root.c_str(), 0755);
  WriteFile(root + "/a.txt", "alpha");
  WriteFile(root + "/b.txt", "bravo");
  ::mkdir((root + "/dir").c_str(), 0755);
}

ObjectId IdOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return ObjectId::Existing(st.st_dev, st.st_ino);
}

LockKey EntryOf(const std::string& root, const std::string& parent, const std::string& name) {
  ObjectId dir = IdOf(parent.empty() ? root : root + "/" + parent);
  return EntryKey{dir.dev, dir.ino, name};
}

// The calls a filesystem operation makes, for a file at the backing root level.
struct Changes {
  FsResourceManager* rm;
  std::string root;

  Status Create(const Guid& tx, const std::string& name, const std::string& data) {
    KTMFS_RETURN_IF_ERROR(rm->Lock(tx, {EntryOf(root, "", name)}));
    auto n = rm->NewObjectNumber(tx);
    auto st = rm->Staging(tx);
    if (!n.ok() || !st.ok()) return Status::IoError("staging");
    auto f = (*st)->NewFile(StagedNameForNew(*n));
    if (!f.ok()) return f.status();
    KTMFS_RETURN_IF_ERROR((*f)->Write(0, B(data)));
    return rm->LogOp(tx, {.kind = OpKind::kCreate,
                          .object = ObjectId::New(*n),
                          .path = name,
                          .mode = 0644,
                          .staged_file = StagedNameForNew(*n)});
  }
  // Locks the existing file `name` for `tx` and gives its staged file, made if `make`.
  Result<StagedFile*> Staged(const Guid& tx, const std::string& name, bool make) {
    ObjectId id = IdOf(root + "/" + name);
    KTMFS_RETURN_IF_ERROR(rm->Lock(tx, {ObjectKey{id.dev, id.ino}}));
    auto st = rm->Staging(tx);
    if (!st.ok()) return st.status();
    const std::string staged = StagedNameForExisting(id.dev, id.ino);
    if (StagedFile* f = (*st)->Find(staged)) return f;
    if (!make) return Status::Error(ENOENT, "write " + name + " first");
    int fd = ::open((root + "/" + name).c_str(), O_RDONLY);
    auto made = (*st)->FileFor(staged, fd);
    ::close(fd);
    return made;
  }
  Status Write(const Guid& tx, const std::string& name, uint64_t off, const std::string& data) {
    auto f = Staged(tx, name, true);
    if (!f.ok()) return f.status();
    KTMFS_RETURN_IF_ERROR((*f)->Write(off, B(data)));
    return rm->LogOp(tx, {.kind = OpKind::kWriteExtent,
                          .object = IdOf(root + "/" + name),
                          .path = name,
                          .staged_file = (*f)->name(),
                          .offset = off,
                          .length = data.size()});
  }
  // A small write carried in its record.
  Status WriteData(const Guid& tx, const std::string& name, uint64_t off, const std::string& data) {
    ObjectId id = IdOf(root + "/" + name);
    KTMFS_RETURN_IF_ERROR(rm->Lock(tx, {ObjectKey{id.dev, id.ino}}));
    return rm->LogOp(tx, {.kind = OpKind::kWriteData,
                          .object = id,
                          .path = name,
                          .offset = off,
                          .length = data.size(),
                          .data = data});
  }
  Status Truncate(const Guid& tx, const std::string& name, uint64_t size) {
    auto f = Staged(tx, name, false);
    if (!f.ok()) return f.status();
    KTMFS_RETURN_IF_ERROR((*f)->Truncate(size));
    return rm->LogOp(tx, {.kind = OpKind::kSetattr,
                          .object = IdOf(root + "/" + name),
                          .path = name,
                          .set_mask = kSetSize,
                          .size = size});
  }
  Status Rename(const Guid& tx, const std::string& from, const std::string& to) {
    ObjectId id = IdOf(root + "/" + from);
    KTMFS_RETURN_IF_ERROR(
        rm->Lock(tx, {ObjectKey{id.dev, id.ino}, EntryOf(root, "", from), EntryOf(root, "", to)}));
    return rm->LogOp(tx, {.kind = OpKind::kRename, .object = id, .path = from, .path2 = to});
  }
};

// The TM and filesystem RMs over one fault-injecting log; the backing trees are real
// directories, which a crash of the log's storage leaves as the process last wrote them.
bool StagingEmpty(const std::string& root);

class FsRmWorld {
 public:
  explicit FsRmWorld(int rms = 1) : storage_(7) {
    for (int i = 0; i < rms; ++i) {
      roots_.push_back(tmp_.path() + "/backing" + std::to_string(i));
      BuildTree(roots_.back());
      ids_.push_back(Guid::Random());
    }
  }
  ~FsRmWorld() { Stop(); }

  Status Start() {
    Stop();
    log::LogOptions lo;
    lo.container_size = 256 << 10;
    lo.max_containers = max_containers;
    lo.reserve_percent = reserve_percent;
    auto l = log::Log::Open(&storage_, lo, true);
    if (!l.ok()) return l.status();
    log_ = std::move(*l);
    tm::TmOptions to;
    to.timeout_thread = false;
    to.restart_every_log_bytes = std::min<uint64_t>(
        to.restart_every_log_bytes, uint64_t(lo.container_size) * max_containers / 16);
    auto t = tm::TransactionManager::Open(log_.get(), to);
    if (!t.ok()) return t.status();
    tm_ = std::move(*t);
    KTMFS_RETURN_IF_ERROR(tm_->Recover());
    if (checkpoint) KTMFS_RETURN_IF_ERROR(tm_->Checkpoint());
    for (size_t i = 0; i < roots_.size(); ++i) {
      auto stream = log_->OpenStream("fs" + std::to_string(i), true);
      if (!stream.ok()) return stream.status();
      FsRmOptions o;
      o.name = "fs" + std::to_string(i);
      o.id = ids_[i];
      o.backing_root = roots_[i];
      o.staging_root = tmp_.path() + "/state/staging/fs" + std::to_string(i);
      o.tm = tm_.get();
      o.log = log_.get();
      o.stream = *stream;
      o.sync_in_background = background;
      o.visibility = visibility;
      o.gate = gate;
      o.report = report;
      streams_.push_back(*stream);
      rms_.push_back(std::make_unique<FsResourceManager>(o));
      if (recovery_hook) rms_.back()->SetApplyHook(recovery_hook);
      KTMFS_RETURN_IF_ERROR(rms_.back()->Register());
      KTMFS_RETURN_IF_ERROR(rms_.back()->Recover());
    }
    if (checkpoint) KTMFS_RETURN_IF_ERROR(tm_->Checkpoint());
    return Status::Ok();
  }
  void Stop() {
    rms_.clear();
    streams_.clear();
    tm_.reset();
    log_.reset();
  }
  void CrashAndRestart() {
    if (!storage_.crashed()) storage_.CrashNow(log::CrashMode::kDropUnsynced);
    Stop();
    storage_.Restart();
  }

  // The RMs made by the next Start sync applied commits in the background.
  bool background = false;
  // What the RMs made by the next Start say for the daemon's log.
  std::function<void(bool error, const std::string& message)> report;
  // The apply hook of the RMs made by the next Start, already during their recovery.
  MutationHook recovery_hook;
  // The daemon's visibility lock and gate, for the RMs made by the next Start.
  std::shared_mutex* visibility = nullptr;
  VisibilityGate* gate = nullptr;
  // The log the next Start creates, and whether it starts as the daemon does (TM restart areas
  // after recovery).
  uint32_t max_containers = 256;
  uint32_t reserve_percent = 0;
  bool checkpoint = false;

  tm::TransactionManager& tm() { return *tm_; }
  // The RM's records in log order, as (type, transaction).
  std::vector<std::pair<RecordType, Guid>> Records(size_t i = 0) {
    std::vector<std::pair<RecordType, Guid>> out;
    auto cursor = streams_[i]->ReadForward(streams_[i]->base_lsn());
    log::Record rec;
    while (true) {
      auto more = cursor->Next(&rec);
      if (!more.ok() || !*more) break;
      if (rec.type != kFsRecordType) continue;
      auto r = DecodeRecord(rec.payload, rec.lsn);
      if (r.ok()) out.emplace_back(r->type, r->tx);
    }
    return out;
  }
  FsResourceManager& rm(size_t i = 0) { return *rms_[i]; }
  Changes changes(size_t i = 0) { return {rms_[i].get(), roots_[i]}; }
  const std::string& root(size_t i = 0) const { return roots_[i]; }
  std::string staging_root(size_t i = 0) const {
    return tmp_.path() + "/state/staging/fs" + std::to_string(i);
  }
  log::FaultInjectingStorage& storage() { return storage_; }
  log::Log& log() { return *log_; }
  // A committed transaction's staging stays until its APPLIED record is durable (a redo
  // needs it until then); this makes it durable and lets the RMs drop what they can.
  bool StagingGoneOnceAppliedIsDurable() {
    for (size_t i = 0; i < rms_.size(); i++)
      if (StagingEmpty(staging_root(i))) return false;  // dropped too early
    if (!log_->Flush().ok()) return false;
    for (size_t i = 0; i < rms_.size(); i++) {
      rms_[i]->DropDurableStaging();
      if (!StagingEmpty(staging_root(i))) return false;
    }
    return true;
  }

 private:
  TempDir tmp_;
  log::FaultInjectingStorage storage_;
  std::vector<std::string> roots_;
  std::vector<Guid> ids_;
  std::unique_ptr<log::Log> log_;
  std::unique_ptr<tm::TransactionManager> tm_;
  std::vector<log::Stream*> streams_;
  std::vector<std::unique_ptr<FsResourceManager>> rms_;
};

// Where `type` of `tx` is among `records`, or -1.
int IndexOf(const std::vector<std::pair<RecordType, Guid>>& records, RecordType type,
            const Guid& tx) {
  for (size_t i = 0; i < records.size(); i++)
    if (records[i].first == type && records[i].second == tx) return static_cast<int>(i);
  return -1;
}

bool StagingEmpty(const std::string& root) {
  return Snapshot(root).empty();
}

Status Workload(FsRmWorld& w, const Guid& tx) {
  KTMFS_RETURN_IF_ERROR(w.changes().Create(tx, "new.txt", "fresh"));
  KTMFS_RETURN_IF_ERROR(w.changes().Write(tx, "a.txt", 1, "LP"));
  return w.changes().Rename(tx, "b.txt", "c.txt");
}

std::map<std::string, std::string> Expected() {
  TempDir t;
  std::string r = t.path() + "/x";
  BuildTree(r);
  WriteFile(r + "/a.txt", "aLPha");
  ::rename((r + "/b.txt").c_str(), (r + "/c.txt").c_str());
  WriteFile(r + "/new.txt", "fresh");
  ::chmod((r + "/new.txt").c_str(), 0644);
  return Snapshot(r);
}

std::map<std::string, std::string> Initial() {
  TempDir t;
  BuildTree(t.path() + "/x");
  return Snapshot(t.path() + "/x");
}

TEST(FsRm, CommitAppliesAndReleasesLocks) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE(Workload(w, *tx).ok());
  EXPECT_EQ(Snapshot(w.root()), Initial());  // nothing visible before commit
  EXPECT_GT(w.rm().locks().CountHeldBy(*tx), 0u);
  Status s = w.tm().Commit(*tx);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Snapshot(w.root()), Expected());
  EXPECT_EQ(w.rm().locks().CountHeldBy(*tx), 0u);
  EXPECT_TRUE(w.StagingGoneOnceAppliedIsDurable());
}

TEST(FsRm, RollbackLeavesBackingUnchanged) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  ASSERT_TRUE(w.tm().Rollback(*tx).ok());
  EXPECT_EQ(Snapshot(w.root()), Initial());
  EXPECT_EQ(w.rm().locks().size(), 0u);
  EXPECT_TRUE(StagingEmpty(w.staging_root()));
}

TEST(FsRm, SecondTransactionGetsBusy) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto t1 = w.tm().Begin({});
  auto t2 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t1, "a.txt", 0, "x").ok());
  Status s = w.changes().Write(*t2, "a.txt", 0, "y");
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find(t1->ToString()), std::string::npos);
  ASSERT_TRUE(w.tm().Commit(*t1).ok());
  EXPECT_TRUE(w.changes().Write(*t2, "a.txt", 0, "y").ok());
  ASSERT_TRUE(w.tm().Commit(*t2).ok());
  std::ifstream in(w.root() + "/a.txt");
  std::string data((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(data, "ylpha");
}

TEST(FsRm, TransactionWithoutStagedDataCommits) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Rename(*tx, "a.txt", "z.txt").ok());
  Status s = w.tm().Commit(*tx);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto now = Snapshot(w.root());
  EXPECT_EQ(now.count("a.txt"), 0u);
  EXPECT_EQ(now.count("z.txt"), 1u);
  EXPECT_TRUE(w.StagingGoneOnceAppliedIsDurable());
}

TEST(FsRm, AViewMadeWithoutAnOpCostsTheCommitNothing) {
  // chown(f, -1, -1) logs nothing but stamps a ctime in the view: the overlay it needs is made
  // without enlisting, so the commit neither logs nor waits here, and the daemon drops it at
  // the end (DropUnenlisted).
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  const auto before = Snapshot(w.root());
  const size_t records = w.Records().size();
  for (bool commit : {true, false}) {
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    EXPECT_EQ(w.rm().Overlay(*tx), nullptr);
    TxOverlay* ov = w.rm().OverlayFor(*tx);
    ASSERT_NE(ov, nullptr);
    EXPECT_EQ(w.rm().Overlay(*tx), ov);
    EXPECT_EQ(w.rm().OverlayFor(*tx), ov);  // one per transaction
    ov->Touch(ObjectId::Existing(1, 2), {1, 0}, false);
    Status s = commit ? w.tm().Commit(*tx) : w.tm().Rollback(*tx);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(w.Records().size(), records) << "the RM took part in the transaction";
    w.rm().DropUnenlisted(*tx);
    EXPECT_EQ(w.rm().Overlay(*tx), nullptr) << (commit ? "commit" : "rollback");
    EXPECT_EQ(Snapshot(w.root()), before);
  }
  // A change after the view enlists as usual; the end's notification drops the overlay, and
  // DropUnenlisted leaves an enlisted transaction alone.
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(tx.ok());
  w.rm().OverlayFor(*tx);
  ASSERT_TRUE(w.changes().Rename(*tx, "a.txt", "z.txt").ok());
  w.rm().DropUnenlisted(*tx);
  ASSERT_NE(w.rm().Overlay(*tx), nullptr);
  Status s = w.tm().Commit(*tx);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(w.rm().Overlay(*tx), nullptr);
  EXPECT_EQ(Snapshot(w.root()).count("z.txt"), 1u);
}

TEST(FsRm, TwoBackingDirectoriesCommitTogether) {
  FsRmWorld w(2);
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(w.changes(0).Create(*tx, "one", "1").ok());
  ASSERT_TRUE(w.changes(1).Create(*tx, "two", "2").ok());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  EXPECT_EQ(Snapshot(w.root(0)).count("one"), 1u);
  EXPECT_EQ(Snapshot(w.root(1)).count("two"), 1u);
}

// Two-phase commit across two backing directories, the log crashing at every event: after
// recovery both directories show the transaction or neither does.
TEST(FsRm, TwoPhaseCrashAtEveryLogEventIsAtomic) {
  uint64_t events = 0;
  {
    FsRmWorld w(2);
    ASSERT_TRUE(w.Start().ok());
    uint64_t before = w.storage().events();
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(w.changes(0).Create(*tx, "one", "1").ok());
    ASSERT_TRUE(w.changes(1).Write(*tx, "a.txt", 0, "A").ok());
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    events = w.storage().events() - before;
  }
  int both = 0, neither = 0;
  for (log::CrashMode mode : {log::CrashMode::kDropUnsynced, log::CrashMode::kTearLastWrite,
                              log::CrashMode::kKeepRandomUnsynced})
    for (uint64_t k = 1; k <= events + 1; ++k) {
      FsRmWorld w(2);
      ASSERT_TRUE(w.Start().ok());
      w.storage().CrashAtEvent(w.storage().events() + k, mode);
      auto tx = w.tm().Begin({});
      bool committed = false;
      if (tx.ok() && w.changes(0).Create(*tx, "one", "1").ok() &&
          w.changes(1).Write(*tx, "a.txt", 0, "A").ok())
        committed = w.tm().Commit(*tx).ok();
      w.CrashAndRestart();
      Status s = w.Start();
      ASSERT_TRUE(s.ok()) << "k=" << k << " " << s.ToString();
      bool one = Snapshot(w.root(0)).count("one") == 1;
      std::ifstream in(w.root(1) + "/a.txt");
      std::string a((std::istreambuf_iterator<char>(in)), {});
      bool written = a == "Alpha";
      EXPECT_EQ(one, written) << "k=" << k << ": half a transaction";
      if (committed) {
        EXPECT_TRUE(one) << "k=" << k;
      }
      (one ? both : neither)++;
      EXPECT_TRUE(StagingEmpty(w.staging_root(0)) && StagingEmpty(w.staging_root(1)));
    }
  EXPECT_GT(both, 0);
  EXPECT_GT(neither, 0);
}

// Crash the log's storage at every event of a committing run, in every crash mode the storage
// offers, restart and recover: the backing tree is all-old or all-new, all-new
// whenever Commit said OK, and staging is always gone.
TEST(FsRm, CrashAtEveryLogEventThenRecover) {
  uint64_t events = 0;
  {
    FsRmWorld w;
    ASSERT_TRUE(w.Start().ok());
    uint64_t before = w.storage().events();
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(Workload(w, *tx).ok());
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    events = w.storage().events() - before;
  }
  ASSERT_GT(events, 0u);
  auto initial = Initial(), expected = Expected();
  int rolled_back = 0, applied = 0;
  for (log::CrashMode mode : {log::CrashMode::kDropUnsynced, log::CrashMode::kTearLastWrite,
                              log::CrashMode::kKeepRandomUnsynced})
    for (uint64_t k = 1; k <= events + 1; ++k) {
      FsRmWorld w;
      ASSERT_TRUE(w.Start().ok());
      w.storage().CrashAtEvent(w.storage().events() + k, mode);
      auto tx = w.tm().Begin({});
      bool committed = false;
      if (tx.ok() && Workload(w, *tx).ok()) committed = w.tm().Commit(*tx).ok();
      w.CrashAndRestart();
      Status s = w.Start();
      ASSERT_TRUE(s.ok()) << "k=" << k << " " << s.ToString();
      auto now = Snapshot(w.root());
      (now == expected ? applied : rolled_back)++;
      if (committed) {
        EXPECT_EQ(now, expected) << "k=" << k;
      } else {
        EXPECT_TRUE(now == initial || now == expected) << "k=" << k;
      }
      EXPECT_TRUE(StagingEmpty(w.staging_root())) << "k=" << k;
    }
  // Early crashes lose the commit, late ones keep it: both paths of recovery ran.
  EXPECT_GT(rolled_back, 0);
  EXPECT_GT(applied, 0);
}

TEST(FsRm, ApplyInterruptedIsRedoneByRecovery) {
  int total = 0;
  {
    FsRmWorld w;
    ASSERT_TRUE(w.Start().ok());
    w.rm().SetApplyHook([&](const std::string&) {
      ++total;
      return Status::Ok();
    });
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(Workload(w, *tx).ok());
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
  }
  ASSERT_GT(total, 3);
  for (int stop = 0; stop < total; ++stop) {
    FsRmWorld w;
    ASSERT_TRUE(w.Start().ok());
    int seen = 0;
    w.rm().SetApplyHook([&](const std::string& what) {
      return seen++ == stop ? Status::IoError("stop before " + what) : Status::Ok();
    });
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(Workload(w, *tx).ok());
    // The decision is durable before apply starts, so the commit stands.
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    // Half applied: its objects stay locked until recovery finishes the job.
    EXPECT_GT(w.rm().locks().CountHeldBy(*tx), 0u) << "stop=" << stop;
    auto other = w.tm().Begin({});
    EXPECT_EQ(w.changes().Write(*other, "a.txt", 0, "x").code(), EBUSY) << "stop=" << stop;
    w.CrashAndRestart();
    Status s = w.Start();
    ASSERT_TRUE(s.ok()) << "stop=" << stop << " " << s.ToString();
    EXPECT_EQ(Snapshot(w.root()), Expected()) << "stop=" << stop;
    EXPECT_TRUE(StagingEmpty(w.staging_root()));
  }
}

// A commit that writes a big file in place lets readers into everything else before it writes
// that file's data: the visibility lock, which readers inside transactions take, is free, and
// only the big file stays closed at the gate, until its data is there.
// A world whose commits take the visibility lock and close the gate, with a 3 MiB big.bin.
struct GatedWorld {
  GatedWorld() {
    w.visibility = &visibility;
    w.gate = &gate;
    WriteFile(w.root() + "/big.bin", std::string(3 << 20, 'o'));
  }
  std::shared_mutex visibility;
  VisibilityGate gate;
  FsRmWorld w;
};

TEST(FsRm, ABigFileWrittenInPlaceKeepsOnlyItselfFromReaders) {
  GatedWorld g;
  FsRmWorld& w = g.w;
  std::shared_mutex& visibility = g.visibility;
  VisibilityGate& gate = g.gate;
  ASSERT_TRUE(w.Start().ok());
  const ObjectId big = IdOf(w.root() + "/big.bin");
  const ObjectId a = IdOf(w.root() + "/a.txt");
  const std::string data(2 << 20, 'n');
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*tx, "big.bin", 4096, data).ok());
  ASSERT_TRUE(w.changes().WriteData(*tx, "a.txt", 0, "A").ok());
  int big_writes = 0;
  w.rm().SetApplyHook([&](const std::string& what) {
    const bool of_big = what.find("big.bin") != std::string::npos;
    EXPECT_EQ(gate.IsClosed({big.dev, big.ino}), true) << what;
    if (of_big && big_writes++ == 0) {
      EXPECT_TRUE(visibility.try_lock_shared()) << what;
      visibility.unlock_shared();
      EXPECT_FALSE(gate.IsClosed({a.dev, a.ino})) << what;
      EXPECT_EQ(ReadFile(w.root() + "/a.txt"), "Alpha");
    } else if (!of_big) {
      // Under the lock, with everything the transaction holds closed.
      EXPECT_FALSE(visibility.try_lock_shared()) << what;
      EXPECT_TRUE(gate.IsClosed({a.dev, a.ino})) << what;
    }
    return Status::Ok();
  });
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  EXPECT_GT(big_writes, 0);
  EXPECT_FALSE(gate.AnyClosed());
  EXPECT_EQ(ReadFile(w.root() + "/big.bin"),
            std::string(4096, 'o') + data + std::string((3 << 20) - 4096 - data.size(), 'o'));
}

// Files written in place with less than 1 MiB each are written after readers are let in too,
// once together they come to 1 MiB or more, and are served from staging meanwhile: before,
// 1,000 files of 256 KiB kept readers inside transactions waiting for all of their data. Under
// that, they are written with everything else, under the lock.
TEST(FsRm, ManySmallFilesWrittenInPlaceAreServedMeanwhile) {
  constexpr size_t kSize = 64 << 10;
  for (int files : {20, 3}) {  // 1.2 MiB written, then 180 KiB
    SCOPED_TRACE(std::to_string(files) + " files");
    const bool late = files * (kSize - 4096) >= (1 << 20);
    GatedWorld g;
    FsRmWorld& w = g.w;
    for (int i = 0; i < files; ++i)
      WriteFile(w.root() + "/s" + std::to_string(i), std::string(kSize, 'o'));
    ASSERT_TRUE(w.Start().ok());
    std::vector<VisibilityGate::Key> keys;
    for (int i = 0; i < files; ++i) {
      const ObjectId id = IdOf(w.root() + "/s" + std::to_string(i));
      keys.push_back({id.dev, id.ino});
    }
    const std::string expected = std::string(4096, 'o') + std::string(kSize - 4096, 'n');
    auto tx = w.tm().Begin({});
    for (int i = 0; i < files; ++i)
      ASSERT_TRUE(
          w.changes().Write(*tx, "s" + std::to_string(i), 4096, expected.substr(4096)).ok());
    int writes = 0;
    w.rm().SetApplyHook([&](const std::string& what) {
      if (what.rfind("write ", 0) != 0 || what.find("/s") == std::string::npos) return Status::Ok();
      ++writes;
      const bool locked = !g.visibility.try_lock_shared();
      if (!locked) g.visibility.unlock_shared();
      EXPECT_EQ(locked, !late) << what;
      // The last file, whose data is written last: every reader that asks is served it.
      VisibilityGate::Pass pass = g.gate.Enter();
      EXPECT_EQ(pass.AddOrServe(keys.back()), late) << what;
      if (const ServedObject* o = late ? pass.ServedFrom(keys.back()) : nullptr) {
        std::string got(kSize + 100, '?');
        auto n = o->Read(0, std::as_writable_bytes(std::span(got)));
        EXPECT_TRUE(n.ok() && got.substr(0, *n) == expected) << what;
      }
      return Status::Ok();
    });
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    EXPECT_EQ(writes, files);
    EXPECT_FALSE(g.gate.AnyClosed());
    for (int i = 0; i < files; ++i)
      EXPECT_TRUE(ReadFile(w.root() + "/s" + std::to_string(i)) == expected) << i;
  }
}

// Meanwhile a reader that asks is served the big file as the commit leaves it, from staging:
// before apply has written any of its data, and after it has written part of it.
TEST(FsRm, ABigFileWrittenInPlaceIsServedFromStagingMeanwhile) {
  struct Case {
    const char* what;
    uint64_t truncate_to;  // after the write; 0: none
  };
  for (const Case c : {Case{"grown", 0}, Case{"cut short after the write", (1 << 20) + 12345}}) {
    SCOPED_TRACE(c.what);
    GatedWorld g;
    FsRmWorld& w = g.w;
    VisibilityGate& gate = g.gate;
    ASSERT_TRUE(w.Start().ok());
    const ObjectId big = IdOf(w.root() + "/big.bin");
    const VisibilityGate::Key key{big.dev, big.ino};
    // Two writes apply makes one by one, the second ending 8 KiB past the old end.
    const std::string first(1 << 20, 'n'), second((1 << 20) + 8192, 'm');
    std::string expected = std::string(3 << 20, 'o');
    expected.replace(4096, first.size(), first);
    expected.replace(2 << 20, second.size(), second);
    if (c.truncate_to != 0) expected.resize(c.truncate_to);
    // A time long past, so the commit's own shows.
    const timespec long_ago[2] = {{0, UTIME_OMIT}, {1'000'000'000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (w.root() + "/big.bin").c_str(), long_ago, 0), 0);
    std::optional<timespec> served_mtime;
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(w.changes().Write(*tx, "big.bin", 4096, first).ok());
    ASSERT_TRUE(w.changes().Write(*tx, "big.bin", 2 << 20, second).ok());
    if (c.truncate_to != 0) {
      ASSERT_TRUE(w.changes().Truncate(*tx, "big.bin", c.truncate_to).ok());
    }
    ASSERT_TRUE(w.changes().WriteData(*tx, "a.txt", 0, "A").ok());
    int served = 0;
    w.rm().SetApplyHook([&](const std::string& what) {
      if (what.find("big.bin") == std::string::npos || !gate.IsServed(key)) return Status::Ok();
      VisibilityGate::Pass pass = gate.Enter();
      EXPECT_FALSE(pass.Add(key)) << what;  // a reader that does not ask still waits
      EXPECT_TRUE(pass.AddOrServe(key)) << what;
      const ServedObject* o = pass.ServedFrom(key);
      EXPECT_NE(o, nullptr) << what;
      if (o == nullptr) return Status::Ok();
      EXPECT_EQ(o->Attributes().st_size, static_cast<off_t>(expected.size())) << what;
      std::string got(expected.size() + 100, '?');
      auto n = o->Read(0, std::as_writable_bytes(std::span(got)));
      EXPECT_TRUE(n.ok()) << what;
      got.resize(n.ok() ? *n : 0);
      EXPECT_TRUE(got == expected) << what << ": " << got.size() << " bytes, not the commit's";
      const timespec m = o->Attributes().st_mtim;
      EXPECT_GT(m.tv_sec, long_ago[1].tv_sec) << what << ": the old time, for new data";
      if (served_mtime) {
        EXPECT_EQ(m.tv_sec, served_mtime->tv_sec) << what;
        EXPECT_EQ(m.tv_nsec, served_mtime->tv_nsec) << what;
      }
      served_mtime = m;
      served++;
      return Status::Ok();
    });
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    EXPECT_GE(served, 2) << "served before big's first data and between its changes";
    EXPECT_FALSE(gate.IsServed(key));
    EXPECT_FALSE(gate.AnyClosed());
    EXPECT_TRUE(ReadFile(w.root() + "/big.bin") == expected);
    // Serving ends without the time changing: the file keeps the one its readers were shown.
    struct stat after;
    ASSERT_EQ(::stat((w.root() + "/big.bin").c_str(), &after), 0);
    ASSERT_TRUE(served_mtime.has_value());
    EXPECT_EQ(after.st_mtim.tv_sec, served_mtime->tv_sec);
    EXPECT_EQ(after.st_mtim.tv_nsec, served_mtime->tv_nsec);
  }
}

// Prepare checks, reserves and syncs a big transaction's staged data without the RM's mutex,
// which every other transaction's operations take: they go on meanwhile.
TEST(FsRm, PrepareSyncsStagingWithoutHoldingOthersUp) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  auto other = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*tx, "a.txt", 0, std::string(1 << 20, 'z')).ok());
  bool hooked = false;
  w.rm().SetPrepareHook([&](const Guid& preparing) {
    hooked = true;
    EXPECT_EQ(preparing, *tx);
    EXPECT_FALSE(w.rm().MutexHeldForTests());
    // Another transaction's change, on this thread: it would wait forever for a held mutex.
    if (!w.rm().MutexHeldForTests()) {
      EXPECT_TRUE(w.changes().WriteData(*other, "b.txt", 0, "B").ok());
    }
  });
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  EXPECT_TRUE(hooked);
  w.rm().SetPrepareHook(nullptr);
  ASSERT_TRUE(w.tm().Commit(*other).ok());
  EXPECT_EQ(ReadFile(w.root() + "/b.txt"), "Bravo");
}

// A big xattr value waits in the transaction's staging, not in memory with its op; commit
// applies it from there, and a redo after a crash takes it from its record.
TEST(FsRm, ABigXattrValueWaitsInStagingAndCommitsFromThereOrFromItsRecord) {
  std::string value;
  for (int i = 0; value.size() < 3000; i++)
    value += std::to_string(i) + ",";
  for (bool crash : {false, true}) {
    FsRmWorld w;
    ASSERT_TRUE(w.Start().ok());
    const std::string file = w.root() + "/a.txt";
    if (::setxattr(file.c_str(), "user.probe", "1", 1, 0) != 0)
      GTEST_SKIP() << "no user xattrs where the test's directories are: " << std::strerror(errno);
    ::removexattr(file.c_str(), "user.probe");
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    const ObjectId id = IdOf(file);
    ASSERT_TRUE(w.rm().Lock(*tx, {ObjectKey{id.dev, id.ino}}).ok());
    auto staging = w.rm().Staging(*tx);
    ASSERT_TRUE(staging.ok());
    auto stored = (*staging)->StoreValue(value);
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    Status s = w.rm().LogOp(*tx, {.kind = OpKind::kSetxattr,
                                  .object = id,
                                  .path = "a.txt",
                                  .name = "user.big",
                                  .value = value,
                                  .stored_value = *stored});
    ASSERT_TRUE(s.ok()) << s.ToString();
    XattrLookup seen = w.rm().Overlay(*tx)->GetXattr(id, "user.big");
    EXPECT_EQ(seen.kind, XattrLookup::Kind::kValue);
    EXPECT_EQ(seen.stored, *stored);
    EXPECT_TRUE(seen.value.empty()) << "the view keeps where the value is, not the value";
    if (crash) {
      // Apply stops at once; the staging's value file is then lost with the crash.
      const std::string values = (*staging)->dir() + "/" + kValueFileName;
      w.rm().SetApplyHook([](const std::string& what) { return Status::IoError("stop: " + what); });
      ASSERT_TRUE(w.tm().Commit(*tx).ok());
      w.CrashAndRestart();
      ASSERT_EQ(::unlink(values.c_str()), 0) << values << ": " << std::strerror(errno);
      s = w.Start();
      ASSERT_TRUE(s.ok()) << s.ToString();
    } else {
      s = w.tm().Commit(*tx);
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    std::string got(8192, '\0');
    const ssize_t n = ::getxattr(file.c_str(), "user.big", got.data(), got.size());
    ASSERT_GT(n, 0) << "crash=" << crash << ": " << std::strerror(errno);
    got.resize(static_cast<size_t>(n));
    EXPECT_EQ(got, value) << "crash=" << crash;
  }
}

// Apply can fail after the decision for reasons outside ktmfs (EIO, an administrator's change).
// The commit stands and is acknowledged; its apply stays pending with its locks, and a retry
// finishes it once the cause is gone.
TEST(FsRm, ApplyFailingAfterTheDecisionStaysPendingUntilARetrySucceeds) {
  for (bool background : {false, true}) {
    FsRmWorld w;
    w.background = background;
    ASSERT_TRUE(w.Start().ok());
    bool fail = true;
    w.rm().SetApplyHook([&](const std::string& what) {
      return fail ? Status::IoError("injected before " + what) : Status::Ok();
    });
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(Workload(w, *tx).ok());
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    auto pending = w.rm().PendingApplies();
    ASSERT_EQ(pending.size(), 1u) << "background=" << background;
    EXPECT_EQ(pending[0].tx, *tx);
    EXPECT_NE(pending[0].error.find("injected"), std::string::npos) << pending[0].error;
    auto other = w.tm().Begin({});
    EXPECT_EQ(w.changes().Write(*other, "a.txt", 0, "x").code(), EBUSY);
    EXPECT_EQ(w.rm().RetryPendingApplies(), 1u);  // still failing
    EXPECT_EQ(w.rm().PendingApplies()[0].attempts, 2u);
    fail = false;
    EXPECT_EQ(w.rm().RetryPendingApplies(), 0u);
    EXPECT_TRUE(w.rm().PendingApplies().empty());
    EXPECT_EQ(w.rm().locks().CountHeldBy(*tx), 0u);
    EXPECT_EQ(Snapshot(w.root()), Expected()) << "background=" << background;
    ASSERT_TRUE(w.tm().Rollback(*other).ok());
    // A crash now at most redoes it (its APPLIED record may not be durable yet).
    w.CrashAndRestart();
    ASSERT_TRUE(w.Start().ok());
    EXPECT_EQ(w.rm().recovery_report().pending, 0u);
    EXPECT_EQ(Snapshot(w.root()), Expected());
  }
}

// A pending apply may already have given a file it rewrote whole its new content (a new
// inode under the old name, apply.cc ReplaceFiles) when a later step fails. Every retry makes
// that file again, so the transaction holds it as it holds the old one: no other writer gets
// in between, before or after a crash.
TEST(FsRm, APendingApplyHoldsTheFilesItAlreadyReplaced) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  bool fail = true;
  auto on_b = [&](const std::string& what) {
    return fail && what.find("b.txt") != std::string::npos ? Status::IoError("injected: " + what)
                                                           : Status::Ok();
  };
  w.rm().SetApplyHook(on_b);
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*tx, "a.txt", 0, "ALPHA!").ok());  // whole: replaced
  ASSERT_TRUE(w.changes().Write(*tx, "b.txt", 1, "R").ok());       // in part: in place, fails
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  ASSERT_EQ(w.rm().PendingApplies().size(), 1u);
  EXPECT_EQ(ReadFile(w.root() + "/a.txt"), "ALPHA!");
  for (int mount = 0; mount < 2; ++mount) {
    auto other = w.tm().Begin({});
    EXPECT_EQ(w.changes().Write(*other, "a.txt", 0, "x").code(), EBUSY) << "mount " << mount;
    ASSERT_TRUE(w.tm().Rollback(*other).ok());
    w.CrashAndRestart();
    w.recovery_hook = on_b;
    ASSERT_TRUE(w.Start().ok());
    ASSERT_EQ(w.rm().PendingApplies().size(), 1u);
  }
  fail = false;
  EXPECT_EQ(w.rm().RetryPendingApplies(), 0u);
  EXPECT_EQ(ReadFile(w.root() + "/a.txt"), "ALPHA!");
  EXPECT_EQ(ReadFile(w.root() + "/b.txt"), "bRavo");
  EXPECT_EQ(w.rm().locks().CountHeldBy(*tx), 0u);
}

// A mount never fails because a committed transaction cannot be applied: recovery keeps it
// pending, locked, with its records and staging, and a later retry or mount applies it.
TEST(FsRm, RecoveryKeepsAnUnappliableCommitPendingAndComesUp) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  w.rm().SetApplyHook([](const std::string& what) { return Status::IoError("before " + what); });
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  for (int mount = 0; mount < 2; ++mount) {
    w.CrashAndRestart();
    w.recovery_hook = [](const std::string& what) { return Status::IoError("still " + what); };
    Status s = w.Start();
    ASSERT_TRUE(s.ok()) << "mount " << mount << ": " << s.ToString();
    EXPECT_EQ(w.rm().recovery_report().pending, 1u);
    ASSERT_EQ(w.rm().PendingApplies().size(), 1u);
    EXPECT_GT(w.rm().locks().CountHeldBy(*tx), 0u);
    auto other = w.tm().Begin({});
    EXPECT_EQ(w.changes().Write(*other, "a.txt", 0, "x").code(), EBUSY);
    ASSERT_TRUE(w.tm().Rollback(*other).ok());
  }
  // The cause is gone: the retry applies it whole.
  w.rm().SetApplyHook(nullptr);
  EXPECT_EQ(w.rm().RetryPendingApplies(), 0u);
  EXPECT_EQ(Snapshot(w.root()), Expected());
  EXPECT_EQ(w.rm().locks().CountHeldBy(*tx), 0u);
  w.CrashAndRestart();
  w.recovery_hook = nullptr;
  ASSERT_TRUE(w.Start().ok());
  EXPECT_EQ(w.rm().recovery_report().pending, 0u);
  EXPECT_EQ(Snapshot(w.root()), Expected());
  EXPECT_TRUE(StagingEmpty(w.staging_root()));
}

// A single-phase commit whose COMMITTED flush fails may or may not be durable: the caller is
// told the outcome is unknown (never "rolled back"), the objects stay locked, and recovery
// settles it: wholly applied or wholly absent.
TEST(FsRm, FailedCommitFlushSaysTheOutcomeIsUnknown) {
  FsRmWorld w;
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  w.storage().FailAtEvent(w.storage().events() + 1, EIO);
  Status s = w.tm().Commit(*tx);
  EXPECT_EQ(s.code(), tm::kOutcomeUnknownErrno) << s.ToString();
  EXPECT_NE(s.message().find("unknown until the next mount"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(tx->ToString()), std::string::npos) << s.message();
  EXPECT_GT(w.rm().locks().CountHeldBy(*tx), 0u);  // kept for recovery
  w.CrashAndRestart();
  ASSERT_TRUE(w.Start().ok());
  const auto tree = Snapshot(w.root());
  EXPECT_TRUE(tree == Expected() || tree == Initial());
}

TEST(FsRm, BackgroundSyncLogsAppliedOnlyAfterTheCommitIsVisible) {
  FsRmWorld w;
  w.background = true;
  ASSERT_TRUE(w.Start().ok());
  std::atomic<bool> release{false};
  std::atomic<int> batches{0};
  w.rm().SetSyncHook([&] {
    batches++;
    while (!release.load())
      std::this_thread::yield();
  });
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  // Acknowledged and visible, its locks free for the next transaction; not yet synced.
  EXPECT_EQ(Snapshot(w.root()), Expected());
  EXPECT_EQ(w.rm().locks().CountHeldBy(*tx), 0u);
  EXPECT_TRUE(w.rm().AppliedPending());
  EXPECT_EQ(IndexOf(w.Records(), RecordType::kApplied, *tx), -1);
  release = true;
  ASSERT_TRUE(w.rm().WaitAppliedDurable().ok());
  EXPECT_FALSE(w.rm().AppliedPending());
  EXPECT_EQ(batches.load(), 1);
  auto records = w.Records();
  EXPECT_GT(IndexOf(records, RecordType::kApplied, *tx),
            IndexOf(records, RecordType::kCommitted, *tx));
  // APPLIED was made durable with the sync: a crash now leaves nothing to redo.
  w.CrashAndRestart();
  ASSERT_TRUE(w.Start().ok());
  EXPECT_EQ(w.rm().recovery_report().redone, 0u);
  EXPECT_EQ(Snapshot(w.root()), Expected());
}

TEST(FsRm, CrashBeforeTheBackgroundSyncIsRedoneByRecovery) {
  FsRmWorld w;
  w.background = true;
  ASSERT_TRUE(w.Start().ok());
  std::atomic<bool> release{false};
  w.rm().SetSyncHook([&] {
    while (!release.load())
      std::this_thread::yield();
  });
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  w.storage().CrashNow(log::CrashMode::kDropUnsynced);
  release = true;  // the sync thread's APPLIED now goes nowhere
  w.CrashAndRestart();
  ASSERT_TRUE(w.Start().ok());
  EXPECT_EQ(w.rm().recovery_report().redone, 1u);
  EXPECT_EQ(Snapshot(w.root()), Expected());
  EXPECT_TRUE(StagingEmpty(w.staging_root()));
}

// The daemon's housekeeping flushes APPLIED records no commit has flushed. When the log's
// device fails that flush, every change outside transactions fails (EIO) until it succeeds:
// before, nothing said why.
TEST(FsRm, AFailedHousekeepingFlushIsSaidOnce) {
  std::vector<std::string> errors;  // outlives the world, whose end reports too
  std::mutex mu;
  FsRmWorld w;
  w.background = true;
  w.report = [&](bool error, const std::string& message) {
    std::lock_guard l(mu);
    if (error) errors.push_back(message);
  };
  ASSERT_TRUE(w.Start().ok());
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(Workload(w, *tx).ok());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  ASSERT_TRUE(w.rm().WaitSynced().ok());
  ASSERT_TRUE(w.rm().AppliedPending());
  w.storage().FailAtEvent(w.storage().events() + 1, EIO);
  w.rm().DropDurableStaging(/*flush=*/true);
  w.rm().DropDurableStaging(/*flush=*/true);
  std::lock_guard l(mu);
  ASSERT_EQ(errors.size(), 1u);  // each retry fails the same way (the log stays failed)
  EXPECT_NE(errors[0].find("making the APPLIED record at"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("changes outside transactions fail (EIO)"), std::string::npos)
      << errors[0];
}

// A sync round appends its APPLIED records and leaves them to the next flush: in a loop of
// small commits that is the next commit's own, which spares a log write and a device flush per
// commit. Until then a crash redoes the commit over its own result; after it, nothing is redone
// that was synced.
TEST(FsRm, ASyncRoundLeavesItsAppliedRecordsToTheNextFlush) {
  {
    FsRmWorld w;
    w.background = true;
    ASSERT_TRUE(w.Start().ok());
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(Workload(w, *tx).ok());
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
    ASSERT_TRUE(w.rm().WaitSynced().ok());
    EXPECT_TRUE(w.rm().AppliedPending()) << "the round flushed its APPLIED record itself";
    w.CrashAndRestart();
    ASSERT_TRUE(w.Start().ok());
    EXPECT_EQ(w.rm().recovery_report().redone, 1u);
    EXPECT_EQ(Snapshot(w.root()), Expected());
    EXPECT_TRUE(StagingEmpty(w.staging_root()));
  }
  FsRmWorld w;
  w.background = true;
  ASSERT_TRUE(w.Start().ok());
  std::atomic<int> batches{0};
  std::atomic<bool> release{false};
  w.rm().SetSyncHook([&] {
    if (batches++ == 1)  // the second commit's round: held until the crash
      while (!release.load())
        std::this_thread::yield();
  });
  auto t1 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t1, "a.txt", 0, "1").ok());
  ASSERT_TRUE(w.tm().Commit(*t1).ok());
  ASSERT_TRUE(w.rm().WaitSynced().ok());
  auto t2 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t2, "a.txt", 1, "2").ok());
  ASSERT_TRUE(w.tm().Commit(*t2).ok());  // its decision's flush covers t1's APPLIED
  w.storage().CrashNow(log::CrashMode::kDropUnsynced);
  release = true;
  w.CrashAndRestart();
  ASSERT_TRUE(w.Start().ok());
  EXPECT_EQ(w.rm().recovery_report().redone, 1u) << "t1 was redone: its APPLIED was lost";
  std::ifstream in(w.root() + "/a.txt");
  std::string data((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(data, "12pha");
}

// After a sync round fails, the backing directory is right only once recovery has redone the
// log: every later commit and every change outside transactions is refused until the next
// mount, also once nothing is left in the queue (a later change that went ahead would be
// overwritten by that redo).
TEST(FsRm, AFailedSyncRoundRefusesEveryLaterCommit) {
  FsRmWorld w;
  w.background = true;
  ASSERT_TRUE(w.Start().ok());
  std::atomic<int> batches{0};
  const std::string root = w.root(), away = w.root() + ".away";
  w.rm().SetSyncHook([&] {
    // The first round can open neither the file its commit wrote nor the backing directory,
    // whose filesystem it would sync instead of a file gone since (SyncTogether).
    if (batches++ == 0) {
      ASSERT_EQ(::rename(root.c_str(), away.c_str()), 0);
    }
  });
  auto t1 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t1, "a.txt", 0, "1").ok());
  ASSERT_TRUE(w.tm().Commit(*t1).ok());  // acknowledged: durable in the log
  EXPECT_FALSE(w.rm().WaitSynced().ok());
  ASSERT_EQ(::rename(away.c_str(), root.c_str()), 0);
  // Nothing is queued now; the failure stays.
  EXPECT_TRUE(w.rm().AppliedPending());
  EXPECT_FALSE(w.rm().WaitSynced().ok());
  EXPECT_FALSE(w.rm().WaitAppliedDurable().ok());
  auto t2 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t2, "b.txt", 0, "2").ok());
  EXPECT_FALSE(w.tm().Commit(*t2).ok());
  std::ifstream in(w.root() + "/b.txt");
  std::string data((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(data, "bravo");
}

TEST(FsRm, ALaterCommitWaitsForTheEarlierOnesSync) {
  FsRmWorld w;
  w.background = true;
  ASSERT_TRUE(w.Start().ok());
  std::atomic<bool> second_done{false};
  std::atomic<int> batches{0};
  FsResourceManager* rm = &w.rm();
  w.rm().SetSyncHook([&] {
    // The first batch is held until the second commit either finished (it did not wait: the
    // records show it) or is waiting for this sync.
    if (batches++ == 0)
      while (!second_done.load() && rm->sync_waiters() == 0)
        std::this_thread::yield();
  });
  auto t1 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t1, "a.txt", 0, "1").ok());
  ASSERT_TRUE(w.tm().Commit(*t1).ok());
  auto t2 = w.tm().Begin({});
  ASSERT_TRUE(w.changes().Write(*t2, "a.txt", 1, "2").ok());  // t1's lock is free already
  std::thread second([&] {
    EXPECT_TRUE(w.tm().Commit(*t2).ok());
    second_done = true;
  });
  second.join();
  ASSERT_TRUE(w.rm().WaitAppliedDurable().ok());
  auto records = w.Records();
  int applied1 = IndexOf(records, RecordType::kApplied, *t1);
  ASSERT_GE(applied1, 0);
  EXPECT_LT(applied1, IndexOf(records, RecordType::kPrepared, *t2));
  std::ifstream in(w.root() + "/a.txt");
  std::string data((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(data, "12pha");
}

// `n` transactions, each writing `chunk` over b.txt (carried in its record) and committing.
void CommitChunks(FsRmWorld& w, int n, const std::string& chunk) {
  for (int i = 0; i < n; ++i) {
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    Status s = w.changes().WriteData(*tx, "b.txt", 0, chunk);
    ASSERT_TRUE(s.ok()) << "commit " << i << ": " << s.ToString();
    s = w.tm().Commit(*tx);
    ASSERT_TRUE(s.ok()) << "commit " << i << ": " << s.ToString();
  }
}

// A transaction left open while others work is carried forward in the log (its ops logged
// again, whole, in one RELOGGED record): the others never get ENOSPC however much they commit,
// the stream's base passes its first records, and its commit, redone by recovery after a crash
// in its apply, is whole.
TEST(FsRm, AnIdleTransactionIsCarriedForwardAndItsCommitRedoneFromTheCopy) {
  FsRmWorld w;
  w.max_containers = 8;  // 2 MiB
  w.reserve_percent = 12;
  w.checkpoint = true;
  std::vector<std::string> said;
  w.report = [&](bool, const std::string& m) { said.push_back(m); };
  ASSERT_TRUE(w.Start().ok());
  const std::string chunk(48 << 10, 'x');
  auto idle = w.tm().Begin({});
  ASSERT_TRUE(idle.ok());
  ASSERT_TRUE(w.changes().Create(*idle, "new.txt", "n").ok());
  ASSERT_TRUE(w.changes().WriteData(*idle, "a.txt", 0, "I").ok());
  // A value kept in staging, not in memory: the copy reads it back from there.
  const std::string big(3000, 'v');
  {
    const ObjectId a = IdOf(w.root() + "/a.txt");
    ASSERT_TRUE(w.rm().Lock(*idle, {ObjectKey{a.dev, a.ino}}).ok());
    auto staging = w.rm().Staging(*idle);
    ASSERT_TRUE(staging.ok());
    auto at = (*staging)->StoreValue(big);
    ASSERT_TRUE(at.ok()) << at.status().ToString();
    ASSERT_TRUE(w.rm()
                    .LogOp(*idle, {.kind = OpKind::kSetxattr,
                                   .object = a,
                                   .path = "a.txt",
                                   .name = "user.big",
                                   .value = big,
                                   .stored_value = *at})
                    .ok());
  }
  CommitChunks(w, 200, chunk);  // about 10 MiB through a 2 MiB log
  EXPECT_TRUE(std::any_of(said.begin(), said.end(), [&](const std::string& m) {
    return m.find("transaction " + idle->ToString()) != std::string::npos &&
           m.find("carried forward") != std::string::npos;
  }));
  // Its first records are behind the base: what the stream holds of it is the copy.
  int ops = 0, copies = 0;
  for (const auto& [type, tx] : w.Records()) {
    if (tx != *idle) continue;
    ops += type == RecordType::kOp;
    copies += type == RecordType::kRelogged;
  }
  EXPECT_EQ(ops, 0);
  EXPECT_GE(copies, 1);
  // Apply stops before its first change: the commit stands, and recovery redoes it from the copy.
  w.rm().SetApplyHook(
      [](const std::string& what) { return Status::IoError("stop before " + what); });
  Status s = w.tm().Commit(*idle);
  ASSERT_TRUE(s.ok()) << s.ToString();
  w.CrashAndRestart();
  s = w.Start();
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto content = [&](const std::string& name) { return ReadFile(w.root() + "/" + name); };
  EXPECT_EQ(content("a.txt"), "Ilpha");
  std::string value(4096, '\0');
  const ssize_t n =
      ::getxattr((w.root() + "/a.txt").c_str(), "user.big", value.data(), value.size());
  ASSERT_GE(n, 0) << std::strerror(errno);
  value.resize(static_cast<size_t>(n));
  EXPECT_EQ(value, big);
  EXPECT_EQ(content("new.txt"), "n");
  EXPECT_EQ(content("b.txt"), chunk);
  EXPECT_TRUE(StagingEmpty(w.staging_root()));
}

// A user's transaction (bounded) may log no more than can be carried forward: past a sixteenth
// of the log its next op gets ENOSPC, which changes nothing, and what it did still commits.
TEST(FsRm, ABoundedTransactionStopsWhereItCouldNoLongerBeCarried) {
  FsRmWorld w;
  w.max_containers = 8;  // 2 MiB: the bound is 128 KiB
  ASSERT_TRUE(w.Start().ok());
  ASSERT_EQ(w.rm().CarryLimit(), 128u << 10);
  auto tx = w.tm().Begin({});
  ASSERT_TRUE(tx.ok());
  const ObjectId a = IdOf(w.root() + "/a.txt");
  ASSERT_TRUE(w.rm().Lock(*tx, {ObjectKey{a.dev, a.ino}}).ok());
  Status refused;
  int logged = 0;
  for (int i = 0; i < 20 && refused.ok(); ++i) {
    const std::string data(16 << 10, static_cast<char>('a' + i));
    refused = w.rm().LogOp(*tx,
                           {.kind = OpKind::kWriteData,
                            .object = a,
                            .path = "a.txt",
                            .length = data.size(),
                            .data = data},
                           /*bounded_owner=*/1000);
    logged += refused.ok();
  }
  ASSERT_EQ(refused.code(), ENOSPC) << refused.ToString();
  EXPECT_NE(refused.message().find("more than a sixteenth of the log"), std::string::npos)
      << refused.message();
  EXPECT_EQ(logged, 7);  // 7 records of 16 KiB and a little fit in 128 KiB, 8 do not
  EXPECT_LE(w.rm().BytesLogged(*tx), w.rm().CarryLimit());
  ASSERT_TRUE(w.tm().Commit(*tx).ok());
  std::ifstream in(w.root() + "/a.txt", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}),
            std::string(16 << 10, static_cast<char>('a' + logged - 1)));
}

// The live transactions of one user may log no more than twice what one may: the user's next
// op past that gets ENOSPC naming the uid, another user's does not, and once one of the user's
// transactions ends the others go on.
TEST(FsRm, OneUsersLiveTransactionsTogetherStopAtAnEighthOfTheLog) {
  FsRmWorld w;
  w.max_containers = 8;  // 2 MiB: 128 KiB a transaction, 256 KiB a user
  ASSERT_TRUE(w.Start().ok());
  const ObjectId a = IdOf(w.root() + "/a.txt");
  const ObjectId b = IdOf(w.root() + "/b.txt");
  const std::string data(16 << 10, 'u');
  auto write = [&](const Guid& tx, const ObjectId& id, const std::string& path, uid_t owner) {
    return w.rm().LogOp(tx,
                        {.kind = OpKind::kWriteData,
                         .object = id,
                         .path = path,
                         .length = data.size(),
                         .data = data},
                        owner);
  };
  std::vector<Guid> txs;
  Status refused;
  int logged = 0;
  for (int t = 0; t < 3 && refused.ok(); ++t) {
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    txs.push_back(*tx);
    for (int i = 0; i < 6 && refused.ok(); ++i) {
      refused = write(*tx, a, "a.txt", 1000);
      logged += refused.ok();
    }
  }
  ASSERT_EQ(refused.code(), ENOSPC) << refused.ToString();
  EXPECT_NE(refused.message().find("live transactions of uid 1000"), std::string::npos)
      << refused.message();
  EXPECT_GE(logged, 12);
  EXPECT_LT(logged, 18);
  // Another user is not held back.
  auto other = w.tm().Begin({});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(w.rm().Lock(*other, {ObjectKey{b.dev, b.ino}}).ok());
  Status s = write(*other, b, "b.txt", 2000);
  EXPECT_TRUE(s.ok()) << s.ToString();
  // One of the user's transactions ends: the last one goes on.
  ASSERT_TRUE(w.tm().Rollback(txs.front()).ok());
  s = write(txs.back(), a, "a.txt", 1000);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

// Power cuts at every stride of log events while an idle transaction is carried forward past
// the stream's base and then commits: recovery always comes up, the idle transaction is whole
// or absent (whole whenever its commit was acknowledged), and the others' last acknowledged
// commit is there.
TEST(FsRm, CrashWhileAnIdleTransactionIsCarriedForward) {
  const std::string chunk(48 << 10, 'x');
  auto setup = [&](FsRmWorld& w, Guid* idle) {
    w.max_containers = 8;  // 2 MiB
    w.reserve_percent = 12;
    w.checkpoint = true;
    // The RMs keep the callback after setup returns.
    auto carried = std::make_shared<bool>(false);
    w.report = [carried](bool, const std::string& m) {
      *carried = *carried || m.find("carried forward") != std::string::npos;
    };
    ASSERT_TRUE(w.Start().ok());
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    *idle = *tx;
    ASSERT_TRUE(w.changes().Create(*idle, "new.txt", "n").ok());
    ASSERT_TRUE(w.changes().WriteData(*idle, "a.txt", 0, "I").ok());
    for (int i = 0; i < 100 && !*carried; ++i) {
      auto t = w.tm().Begin({});
      ASSERT_TRUE(w.changes().WriteData(*t, "b.txt", 0, chunk).ok());
      ASSERT_TRUE(w.tm().Commit(*t).ok());
    }
    ASSERT_TRUE(*carried);
  };
  // What the crashes cut: more commits (the base passes the idle transaction's first records,
  // and it is carried again), then its own commit.
  auto run = [&](FsRmWorld& w, const Guid& idle, int* last_acked, bool* idle_acked) {
    for (int i = 0; i < 24; ++i) {
      auto t = w.tm().Begin({});
      if (!t.ok() ||
          !w.changes().WriteData(*t, "b.txt", 0, std::string(chunk.size(), 'a' + i)).ok())
        return;
      if (!w.tm().Commit(*t).ok()) return;
      *last_acked = i;
    }
    *idle_acked = w.tm().Commit(idle).ok();
  };
  uint64_t events = 0;
  {
    FsRmWorld w;
    Guid idle;
    setup(w, &idle);
    const uint64_t before = w.storage().events();
    int last = -1;
    bool acked = false;
    run(w, idle, &last, &acked);
    ASSERT_EQ(last, 23);
    ASSERT_TRUE(acked);
    events = w.storage().events() - before;
  }
  ASSERT_GT(events, 0u);
  auto content = [](FsRmWorld& w, const std::string& name) -> std::optional<std::string> {
    std::ifstream in(w.root() + "/" + name, std::ios::binary);
    if (!in) return std::nullopt;
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const uint64_t stride = std::max<uint64_t>(1, events / 16);
  int whole = 0, absent = 0;
  for (log::CrashMode mode : {log::CrashMode::kDropUnsynced, log::CrashMode::kTearLastWrite})
    for (uint64_t k = 1; k <= events + 1; k += stride) {
      FsRmWorld w;
      Guid idle;
      setup(w, &idle);
      w.storage().CrashAtEvent(w.storage().events() + k, mode);
      int last = -1;
      bool acked = false;
      run(w, idle, &last, &acked);
      w.CrashAndRestart();
      w.report = nullptr;
      Status s = w.Start();
      ASSERT_TRUE(s.ok()) << "k=" << k << " " << s.ToString();
      const auto a = content(w, "a.txt"), n = content(w, "new.txt"), b = content(w, "b.txt");
      const bool applied = a == "Ilpha" && n == "n";
      EXPECT_TRUE(applied || (a == "alpha" && !n)) << "k=" << k << ": half a transaction";
      if (acked) {
        EXPECT_TRUE(applied) << "k=" << k;
      }
      (applied ? whole : absent)++;
      ASSERT_TRUE(b.has_value());
      if (last >= 0) {
        // The last acknowledged commit, or one after it whose commit was cut off.
        EXPECT_GE((*b)[0], 'a' + last) << "k=" << k;
      }
      EXPECT_TRUE(StagingEmpty(w.staging_root())) << "k=" << k;
    }
  EXPECT_GT(whole, 0);
  EXPECT_GT(absent, 0);
}

// A transaction whose own records are too big to carry forward (an eighth of the log and more)
// still pins it: new work gets ENOSPC naming it, before the log is too full for work already
// begun to commit (its records use the reserve), and the next start recovers in the full log.
// Committed work alone never fills it.
TEST(FsRm, ABigIdleTransactionThatFillsTheLogStopsNewWorkOnly) {
  FsRmWorld w;
  w.max_containers = 8;  // 2 MiB
  w.reserve_percent = 12;
  w.checkpoint = true;
  ASSERT_TRUE(w.Start().ok());
  const std::string chunk(48 << 10, 'x');
  CommitChunks(w, 100, chunk);  // about 5 MiB through a 2 MiB log
  auto idle = w.tm().Begin({});
  ASSERT_TRUE(idle.ok());
  ASSERT_TRUE(w.changes().WriteData(*idle, "a.txt", 0, "I").ok());
  // More than a sixteenth of the log in its own records: too much to copy.
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(w.changes().WriteData(*idle, "a.txt", 0, chunk).ok());
  auto begun = w.tm().Begin({});
  ASSERT_TRUE(begun.ok());
  ASSERT_TRUE(w.changes().Create(*begun, "new.txt", "n").ok());
  Status full;
  int commits = 0;
  for (int i = 0; i < 200 && full.ok(); ++i) {
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    Status s = w.changes().WriteData(*tx, "b.txt", 0, chunk);
    if (!s.ok()) {
      full = s;
      ASSERT_TRUE(w.tm().Rollback(*tx).ok());
      break;
    }
    s = w.tm().Commit(*tx);
    ASSERT_TRUE(s.ok()) << s.ToString();
    commits++;
  }
  ASSERT_EQ(full.code(), ENOSPC) << full.ToString();
  EXPECT_NE(full.message().find("transaction " + idle->ToString() + " holds the log"),
            std::string::npos)
      << full.message();
  EXPECT_GT(commits, 5);
  Status s = w.tm().Commit(*begun);
  ASSERT_TRUE(s.ok()) << s.ToString();

  w.CrashAndRestart();
  s = w.Start();
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto content = [&](const std::string& name) {
    std::ifstream in(w.root() + "/" + name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(content("a.txt"), "alpha");  // the idle transaction rolled back
  EXPECT_EQ(content("new.txt"), "n");
  EXPECT_EQ(content("b.txt"), chunk);
  for (int i = 0; i < 50; ++i) {  // the log has room again
    auto tx = w.tm().Begin({});
    ASSERT_TRUE(tx.ok());
    s = w.changes().WriteData(*tx, "b.txt", 0, chunk);
    ASSERT_TRUE(s.ok()) << "after recovery, commit " << i << ": " << s.ToString();
    ASSERT_TRUE(w.tm().Commit(*tx).ok());
  }
}

}  // namespace
}  // namespace ktmfs::fstx

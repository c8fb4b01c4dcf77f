#include "fs/tx/apply.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <iterator>

#include "fs/tx/overwrite_in_place.h"
#include "tests/fstx/temp_dir.h"
#include "tests/fstx/tree_snapshot.h"
#include "tests/fstx/workload.h"

namespace ktmfs::fstx {
namespace {

// The tree every workload starts from, built the same way in backing and reference.
void BuildInitialTree(const std::string& root) {
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  WriteFile(root + "/a.txt", "alpha");
  WriteFile(root + "/b.txt", "bravo");
  ::mkdir((root + "/dir1").c_str(), 0755);
  WriteFile(root + "/dir1/c.txt", "charlie");
  ::mkdir((root + "/dir1/sub").c_str(), 0750);
  WriteFile(root + "/dir1/sub/d.txt", "delta");
  ::mkdir((root + "/empty").c_str(), 0700);
  std::string big(100000, 'x');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>('a' + i % 26);
  WriteFile(root + "/big.bin", big);
  ::setxattr((root + "/b.txt").c_str(), "user.old", "1", 1, 0);
  ::symlink("a.txt", (root + "/sl").c_str());
}

using WorkloadFn = std::function<void(Workload&)>;

// Every kind of operation, with renames of files and directories that depend on each other.
void Mixed(Workload& w) {
  w.Create("new.txt", "fresh file");
  w.Write("new.txt", 20, "tail");
  w.Write("a.txt", 2, "PH");
  w.Write("big.bin", 50000, std::string(70000, 'Z'));  // overwrite and extend
  w.Truncate("b.txt", 2);
  w.Write("b.txt", 4, "!");
  w.Rename("dir1", "moved");
  w.Rename("moved/c.txt", "c-top.txt");
  w.Mkdir("newdir", 0711);
  w.Rename("a.txt", "newdir/a-inside.txt");
  w.Symlink("newdir/link", "../c-top.txt");
  w.Link("c-top.txt", "moved/sub/c-hard");
  w.Unlink("moved/sub/d.txt");
  w.Rmdir("empty");
  w.Chmod("moved/sub", 0700);
  w.Chmod("new.txt", 0600);
  w.SetXattr("c-top.txt", "user.k", "v1");
  w.SetXattr("newdir", "user.dirattr", "d");
  w.RemoveXattr("b.txt", "user.old");
  w.Rename("sl", "b.txt");  // replaces an existing file
}

// A file replaced by a new one under the same name, a directory moved into a new directory
// and back out, names swapped through a temporary.
void Shuffle(Workload& w) {
  w.Unlink("a.txt");
  w.Create("a.txt", "second alpha");
  w.Mkdir("box");
  w.Rename("dir1", "box/dir1");
  w.Create("box/dir1/sub/e.txt", "echo");
  w.Rename("box/dir1/sub", "sub2");
  w.Rename("b.txt", "tmp");
  w.Rename("big.bin", "b.txt");
  w.Rename("tmp", "big.bin");
  w.Truncate("b.txt", 10);
  w.Write("big.bin", 1, "R");
  w.Rename("box/dir1", "dir1");
  w.Rmdir("box");
}

// Swaps (RENAME_EXCHANGE) of a file with a directory and of two new objects, a fifo, hard
// links that outlive the original name.
void Swaps(Workload& w) {
  w.Exchange("a.txt", "dir1");
  w.Mknod("fifo", S_IFIFO | 0640);
  w.Create("n1", "one");
  w.Create("n2", "two");
  w.Exchange("n1", "n2");
  w.Link("b.txt", "a.txt/sub/b-link");  // a.txt is the directory now
  w.Unlink("b.txt");
  w.Rename("fifo", "a.txt/fifo");
  w.Write("big.bin", 0, "head");
  w.Exchange("big.bin", "a.txt/sub/d.txt");
}

// Big writes of existing files as the daemon logs them, one extent per request: runs of
// contiguous extents (apply copies each run at once), offsets off the O_DIRECT alignment, a
// truncate between writes that cuts staged bytes an earlier extent names, growth past the end.
void BigWrites(Workload& w) {
  auto fill = [](size_t n, char c) {
    std::string s(n, c);
    for (size_t i = 0; i < n; i += 97)
      s[i] = static_cast<char>(c + 1 + i % 5);
    return s;
  };
  // From byte 1: the old file's first byte stays, so this is no whole rewrite.
  w.Write("big.bin", 1, fill(199999, 'A'));
  w.Write("big.bin", 200000, fill(150000, 'D'));
  w.Write("big.bin", 350000, fill(70001, 'G'));
  w.Truncate("big.bin", 300003);
  w.Write("big.bin", 4097, fill(90000, 'J'));
  w.Write("big.bin", 94097, fill(80000, 'M'));
  w.Write("a.txt", 70000, fill(70000, 'P'));
  w.Write("a.txt", 140000, fill(65537, 'S'));
  w.Write("big.bin", 5, "small");
  w.Chmod("big.bin", 0640);
  w.SetXattr("a.txt", "user.big", "1");
}

// A big write in place (more than apply's kLateDataMin, from byte 1: no whole rewrite, so no
// replacement), in runs of extents with a truncate between them, and changes of other objects
// around it: a rename into a new directory, a new file, another file written a little, a mode
// and an xattr on the big file after its writes.
void LateBigWrite(Workload& w) {
  std::string run(700000, 'L');
  for (size_t i = 0; i < run.size(); i += 89)
    run[i] = static_cast<char>('0' + i % 10);
  w.Write("big.bin", 1, run);
  w.Mkdir("moved");
  w.Rename("dir1/c.txt", "moved/c.txt");
  w.Write("big.bin", 700001, run);
  w.Truncate("big.bin", 1200000);
  w.Write("big.bin", 1200000, run);
  w.Create("new.txt", "fresh");
  w.Write("a.txt", 1, "LP");
  w.Chmod("big.bin", 0600);
  w.SetXattr("big.bin", "user.late", "1");
}

// Files written in part with less than 1 MiB each but more together: their content comes last
// too (the smallest, b.txt's, with them), around a rename of one of them and a truncate.
void LateSmallWrites(Workload& w) {
  const std::string run(400000, 'S');
  w.Write("a.txt", 1, run);
  w.Mkdir("moved");
  w.Write("dir1/c.txt", 2, run);
  w.Rename("dir1/c.txt", "moved/c.txt");
  w.Write("dir1/sub/d.txt", 1, run.substr(0, 300000));
  w.Truncate("dir1/sub/d.txt", 200000);
  w.Write("b.txt", 3, "tail");
  w.Create("new.txt", "fresh");
}

// Whole rewrites (replacement.h): big.bin overwritten from its first byte to past its end in
// staged extents, b.txt truncated and written again in small writes that carry their data,
// a.txt overwritten exactly; each keeps its mode and xattrs. dir1/c.txt gets a second name
// first, so it stays one file and is written in place, as is dir1/sub/d.txt, changed in part.
void WholeRewrites(Workload& w) {
  w.Write("big.bin", 0, std::string(70000, 'W'));
  w.Write("big.bin", 70000, std::string(90000, 'X'));
  w.Chmod("big.bin", 0600);
  w.Truncate("b.txt", 0);
  w.Write("b.txt", 0, "new b");
  w.Write("b.txt", 3, "tail");
  w.Write("a.txt", 0, "ALPHA");
  w.SetXattr("a.txt", "user.after", "2");
  w.Link("dir1/c.txt", "c-link");
  w.Truncate("dir1/c.txt", 0);
  w.Write("dir1/c.txt", 0, "CHARLIE");
  w.Write("dir1/sub/d.txt", 1, "ELT");  // in part: in place
}

// Truncates followed by writes, as a script's O_TRUNC and rewrite make them: b.txt cut to
// nothing and written whole again; big.bin cut and written over the cut in two overlapping
// writes, then cut to nothing and written in big extents; dir1/c.txt grown by the truncate and
// written below it. Apply writes these first and sets the size after. a.txt is written past a gap
// the truncate zeroes, and dir1/sub/d.txt in two writes with a gap between: the old bytes there
// must not come back, so these are cut first.
void TruncatedRewrites(Workload& w) {
  w.Truncate("b.txt", 0);
  w.Write("b.txt", 0, "new b");
  w.Write("b.txt", 3, "tail");
  w.Truncate("big.bin", 1000);
  w.Write("big.bin", 1000, std::string(500, 'N'));
  w.Write("big.bin", 990, std::string(20, 'O'));
  // Cut again, and written whole in staged extents (one run, copied at once) past its old end.
  w.Truncate("big.bin", 0);
  w.Write("big.bin", 0, std::string(70000, 'P'));
  w.Write("big.bin", 70000, std::string(80000, 'Q'));
  w.Truncate("dir1/c.txt", 10);
  w.Write("dir1/c.txt", 2, "zz");
  w.Truncate("a.txt", 1);
  w.Write("a.txt", 3, "X");
  w.Truncate("dir1/sub/d.txt", 0);
  w.Write("dir1/sub/d.txt", 0, "ab");
  w.Write("dir1/sub/d.txt", 4, "cd");
}

// Whole rewrites in many small writes, which the records carry: a.txt in 20 writes of 4 KiB
// (past apply's threshold for writing the data before the gate), b.txt in two small ones; and
// a file changed in part and a new one beside them.
void SmallWriteRewrites(Workload& w) {
  w.Truncate("a.txt", 0);
  for (int i = 0; i < 20; ++i)
    w.Write("a.txt", static_cast<uint64_t>(i) * 4096,
            std::string(4096, static_cast<char>('a' + i)));
  w.Truncate("b.txt", 0);
  w.Write("b.txt", 0, "new b");
  w.Write("b.txt", 3, "tail");
  w.Write("dir1/sub/d.txt", 1, "ELT");  // in part: in place
  w.Create("new.txt", "fresh");
}

struct World {
  TempDir tmp;
  std::string backing = tmp.path() + "/backing";
  std::string ref = tmp.path() + "/reference";
  std::unique_ptr<TxStaging> staging;
  std::vector<Op> ops;
  std::unique_ptr<Workload> w;

  explicit World(const WorkloadFn& fn) {
    BuildInitialTree(backing);
    BuildInitialTree(ref);
    auto s = TxStaging::Create(tmp.path() + "/staging/rm", Guid::Random());
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    staging = std::move(*s);
    w = std::make_unique<Workload>(backing, ref, staging.get());
    fn(*w);
    EXPECT_TRUE(staging->Sync().ok());
    ops = w->ops();
  }
  ApplyTarget target() const { return {backing, staging->dir()}; }
};

// Stops apply after k changes for every k, then runs it again from the start as recovery
// would; the result must be exactly the reference tree every time.
// `when`: as ApplyChanges takes it; kNever writes every file in place.
// `let_in`: as ApplyChanges takes it (big files' content last).
Status ApplyAll(const World& world, const MutationHook& hook,
                ReplaceWhen when = ReplaceWhen::kIfWhole, const LetReadersIn& let_in = nullptr) {
  auto changes = ApplyChanges(
      world.target(), world.ops, hook, [when](const ObjectId&) { return when; }, nullptr, let_in);
  if (!changes.ok()) return changes.status();
  return SyncApplied(*changes);
}

void CrashAtEveryStep(const WorkloadFn& fn, ReplaceWhen when = ReplaceWhen::kIfWhole,
                      const LetReadersIn& let_in = nullptr) {
  int total = 0;
  {
    World world(fn);
    MutationHook count = [&](const std::string&) {
      ++total;
      return Status::Ok();
    };
    Status s = ApplyAll(world, count, when, let_in);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  ASSERT_GT(total, 5);
  for (int k = 0; k < total; ++k) {
    World world(fn);
    int seen = 0;
    MutationHook stop = [&](const std::string& what) {
      if (seen++ == k) return Status::IoError("injected crash before " + what);
      return Status::Ok();
    };
    Status first = ApplyAll(world, stop, when, let_in);
    ASSERT_EQ(first.code(), EIO) << "k=" << k << " " << first.ToString();
    Status again = ApplyAll(world, nullptr, when, let_in);
    ASSERT_TRUE(again.ok()) << "k=" << k << " " << again.ToString();
    ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
    ASSERT_EQ(Snapshot(world.backing), Snapshot(world.ref)) << "crash after " << k << " changes";
  }
}

TEST(Apply, MixedWorkloadMatchesReference) {
  World world(Mixed);
  ASSERT_TRUE(ApplyTransaction(world.target(), world.ops).ok());
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
  // Moved objects keep their identity: they were renamed, not copied.
  struct stat st;
  ASSERT_EQ(::lstat((world.backing + "/c-top.txt").c_str(), &st), 0);
  EXPECT_EQ(ObjectId::Existing(st.st_dev, st.st_ino), world.w->Original("dir1/c.txt"));
  ASSERT_EQ(::lstat((world.backing + "/moved").c_str(), &st), 0);
  EXPECT_EQ(ObjectId::Existing(st.st_dev, st.st_ino), world.w->Original("dir1"));
  // Staging (and the parked objects in it) is gone.
  EXPECT_NE(::lstat(world.staging->dir().c_str(), &st), 0);
}

TEST(Apply, RunningTwiceIsHarmless) {
  for (const WorkloadFn& fn :
       {WorkloadFn(Mixed), WorkloadFn(Shuffle), WorkloadFn(Swaps), WorkloadFn(BigWrites)}) {
    World world(fn);
    ASSERT_TRUE(ApplyTransaction(world.target(), world.ops).ok());
    auto once = Snapshot(world.backing);
    int changes = 0;
    MutationHook count = [&](const std::string&) {
      ++changes;
      return Status::Ok();
    };
    Status s = ApplyTransaction(world.target(), world.ops, count);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(Snapshot(world.backing), once);
    ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
    EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
  }
}

TEST(Apply, MixedSurvivesCrashAtEveryStep) {
  CrashAtEveryStep(Mixed);
}
TEST(Apply, ShuffleSurvivesCrashAtEveryStep) {
  CrashAtEveryStep(Shuffle);
}

TEST(Apply, SwapsSurviveCrashAtEveryStep) {
  CrashAtEveryStep(Swaps);
}

TEST(Apply, BigWritesSurviveCrashAtEveryStep) {
  CrashAtEveryStep(BigWrites);
}

TEST(Apply, WholeRewritesSurviveCrashAtEveryStep) {
  CrashAtEveryStep(WholeRewrites);
}

TEST(Apply, SmallWriteRewritesSurviveCrashAtEveryStep) {
  CrashAtEveryStep(SmallWriteRewrites);
}

TEST(Apply, BigContentWrittenLastSurvivesCrashAtEveryStep) {
  CrashAtEveryStep(LateBigWrite, ReplaceWhen::kIfWhole, [](const std::vector<ObjectId>&) {});
}

TEST(Apply, SmallContentWrittenLastSurvivesCrashAtEveryStep) {
  size_t late = 0;
  CrashAtEveryStep(LateSmallWrites, ReplaceWhen::kIfWhole,
                   [&](const std::vector<ObjectId>& objects) { late = objects.size(); });
  EXPECT_EQ(late, 4u) << "a.txt, c.txt, d.txt and b.txt are written last";
}

TEST(Apply, TruncatedRewritesSurviveCrashAtEveryStep) {
  CrashAtEveryStep(TruncatedRewrites, ReplaceWhen::kNever);
}

// Written in place, a truncate that the writes after it cover comes after them, with the size
// they leave: the blocks the file has are overwritten, not freed and allocated again.
TEST(Apply, ATruncateCoveredByTheWritesAfterItComesLast) {
  World world(TruncatedRewrites);
  if (!OverwritesInPlace(world.backing))
    GTEST_SKIP() << world.backing << " may copy on write: truncates come first there";
  std::vector<std::string> steps;
  MutationHook record = [&](const std::string& what) {
    const std::string root = world.backing + "/";
    steps.push_back(what.find(root) == std::string::npos
                        ? what
                        : what.substr(0, what.find(root)) +
                              what.substr(what.find(root) + root.size()));
    return Status::Ok();
  };
  ASSERT_TRUE(ApplyAll(world, record, ReplaceWhen::kNever).ok());
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
  auto at = [&](const std::string& step) {
    auto it = std::find(steps.begin(), steps.end(), step);
    EXPECT_NE(it, steps.end()) << step;
    return it - steps.begin();
  };
  EXPECT_LT(at("write b.txt @3"), at("truncate b.txt"));
  EXPECT_LT(at("write big.bin @990"), at("truncate big.bin"));
  // The second truncate of big.bin comes after its extents' copy too.
  EXPECT_EQ(std::count(steps.begin(), steps.end(), "truncate big.bin"), 2);
  auto last = [&](const std::string& step) {
    return std::find(steps.rbegin(), steps.rend(), step) - steps.rbegin();  // from the end
  };
  EXPECT_LT(last("truncate big.bin"), last("write big.bin @0"));
  EXPECT_LT(at("write dir1/c.txt @2"), at("truncate dir1/c.txt"));
  EXPECT_LT(at("truncate a.txt"), at("write a.txt @3"));
  EXPECT_LT(at("truncate dir1/sub/d.txt"), at("write dir1/sub/d.txt @0"));
}

// A file rewritten whole is a new file under the old name, with the old one's mode and xattrs;
// a descriptor opened before the commit still reads the old content, whole. A file with two
// names, and one changed in part, are written in place.
TEST(Apply, WholeRewritesReplaceTheFile) {
  World world(WholeRewrites);
  struct stat big, b, c, d;
  ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &big), 0);
  ASSERT_EQ(::stat((world.backing + "/dir1/sub/d.txt").c_str(), &d), 0);
  ASSERT_EQ(::stat((world.backing + "/b.txt").c_str(), &b), 0);
  ASSERT_EQ(::stat((world.backing + "/dir1/c.txt").c_str(), &c), 0);
  int old_b = ::open((world.backing + "/b.txt").c_str(), O_RDONLY);
  ASSERT_GE(old_b, 0);
  ASSERT_TRUE(ApplyTransaction(world.target(), world.ops).ok());
  struct stat after;
  ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &after), 0);
  EXPECT_NE(after.st_ino, big.st_ino);
  ASSERT_EQ(::stat((world.backing + "/b.txt").c_str(), &after), 0);
  EXPECT_NE(after.st_ino, b.st_ino);
  ASSERT_EQ(::stat((world.backing + "/dir1/c.txt").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, c.st_ino);
  ASSERT_EQ(::stat((world.backing + "/dir1/sub/d.txt").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, d.st_ino);
  char buf[16] = {};
  EXPECT_EQ(::pread(old_b, buf, sizeof buf, 0), 5);
  EXPECT_STREQ(buf, "bravo");
  ::close(old_b);
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  // Modes and xattrs (b.txt's user.old) are part of the snapshot.
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
}

// When no reader can hold the old file (ReplaceWhen::kIfWrittenOnce), a whole rewrite is
// replaced only where its staged file is the new content (big.bin: replacing saves copying
// it); one whose data is in the records (b.txt) is written in place and keeps its inode. A file
// the transaction still has open (kNever) is written in place whatever its size.
TEST(Apply, WholeRewritesReplacedWhenThatSavesTheCopy) {
  for (ReplaceWhen when : {ReplaceWhen::kIfWrittenOnce, ReplaceWhen::kNever}) {
    World world(WholeRewrites);
    struct stat big, b;
    ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &big), 0);
    ASSERT_EQ(::stat((world.backing + "/b.txt").c_str(), &b), 0);
    auto changes =
        ApplyChanges(world.target(), world.ops, nullptr, [when](const ObjectId&) { return when; });
    ASSERT_TRUE(changes.ok()) << changes.status().ToString();
    ASSERT_TRUE(SyncApplied(*changes).ok());
    struct stat after;
    ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &after), 0);
    if (when == ReplaceWhen::kNever)
      EXPECT_EQ(after.st_ino, big.st_ino);
    else
      EXPECT_NE(after.st_ino, big.st_ino);
    ASSERT_EQ(::stat((world.backing + "/b.txt").c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, b.st_ino);
    ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
    EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
  }
}

// Where apply makes the new content of a file whose data came in the records (apply.cc's
// MadeContentPath).
std::string MadeContent(const World& world, const ObjectId& id) {
  return world.staging->dir() + "/r" + std::to_string(id.dev) + "." + std::to_string(id.ino);
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The data of a whole rewrite that the records carry is written into its new file before the
// caller closes the visibility gate: under it only the attributes and the exchange are left,
// whatever the size of the data. Before the gate nothing is changed that a reader could see,
// and no step goes through the mutation hook.
TEST(Apply, NewContentIsMadeBeforeTheGateCloses) {
  World world(SmallWriteRewrites);
  const ObjectId a = world.w->Original("a.txt");
  const ObjectId b = world.w->Original("b.txt");
  std::vector<std::string> steps;
  MutationHook record = [&](const std::string& what) {
    steps.push_back(what);
    return Status::Ok();
  };
  bool closed = false;
  auto close_gate = [&] {
    closed = true;
    EXPECT_TRUE(steps.empty()) << steps.front();
    EXPECT_EQ(ReadWhole(world.backing + "/a.txt"), "alpha");
    EXPECT_EQ(ReadWhole(MadeContent(world, a)), ReadWhole(world.ref + "/a.txt"));
    // Too little data to be worth it: left to the exchange.
    struct stat st;
    EXPECT_NE(::lstat(MadeContent(world, b).c_str(), &st), 0);
  };
  auto changes = ApplyChanges(world.target(), world.ops, record, nullptr, close_gate);
  ASSERT_TRUE(changes.ok()) << changes.status().ToString();
  EXPECT_TRUE(closed);
  ASSERT_TRUE(SyncApplied(*changes).ok());
  struct stat st;
  for (const auto& [name, id] : {std::pair{"/a.txt", a}, std::pair{"/b.txt", b}}) {
    ASSERT_EQ(::stat((world.backing + name).c_str(), &st), 0);
    EXPECT_NE(ObjectId::Existing(st.st_dev, st.st_ino), id) << name;  // exchanged
  }
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
}

// The old file's attributes are copied under the gate, as they are then: a change made behind
// the daemon's back while apply waited for the gate is kept, not undone by the exchange.
TEST(Apply, TheOldFilesAttributesAreTakenUnderTheGate) {
  World world(SmallWriteRewrites);
  const std::string a = world.backing + "/a.txt";
  auto changes = ApplyChanges(world.target(), world.ops, nullptr, nullptr,
                              [&] { ASSERT_EQ(::chmod(a.c_str(), 0600), 0); });
  ASSERT_TRUE(changes.ok()) << changes.status().ToString();
  ASSERT_TRUE(SyncApplied(*changes).ok());
  struct stat st;
  ASSERT_EQ(::stat(a.c_str(), &st), 0);
  EXPECT_NE(ObjectId::Existing(st.st_dev, st.st_ino), world.w->Original("a.txt"));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ReadWhole(a), ReadWhole(world.ref + "/a.txt"));
}

// Asked again under the gate, the answer may now be to write the file in place (the
// transaction's own handle is open, say): the content made early goes unused, and goes.
TEST(Apply, NewContentMadeEarlyGoesWhenTheFileIsWrittenInPlace) {
  World world(SmallWriteRewrites);
  const ObjectId a = world.w->Original("a.txt");
  bool closed = false;
  auto when = [&](const ObjectId&) { return closed ? ReplaceWhen::kNever : ReplaceWhen::kIfWhole; };
  auto changes = ApplyChanges(world.target(), world.ops, nullptr, when, [&] {
    closed = true;
    EXPECT_EQ(ReadWhole(MadeContent(world, a)), ReadWhole(world.ref + "/a.txt"));
  });
  ASSERT_TRUE(changes.ok()) << changes.status().ToString();
  ASSERT_TRUE(SyncApplied(*changes).ok());
  struct stat st;
  ASSERT_EQ(::stat((world.backing + "/a.txt").c_str(), &st), 0);
  EXPECT_EQ(ObjectId::Existing(st.st_dev, st.st_ino), a);  // written in place
  EXPECT_NE(::lstat(MadeContent(world, a).c_str(), &st), 0);
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
}

// A file changed in part is written in place: it keeps its inode.
TEST(Apply, BigWritesKeepTheInode) {
  World world(BigWrites);
  struct stat before, after;
  ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &before), 0);
  ASSERT_TRUE(ApplyTransaction(world.target(), world.ops).ok());
  ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(after.st_size, 300003);
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
}

TEST(Apply, RollbackLeavesBackingIdentical) {
  for (const WorkloadFn& fn : {WorkloadFn(Mixed), WorkloadFn(Shuffle), WorkloadFn(Swaps)}) {
    TempDir pristine;
    std::string before_root = pristine.path() + "/t";
    BuildInitialTree(before_root);
    World world(fn);
    auto before = Snapshot(before_root);
    EXPECT_EQ(Snapshot(world.backing), before);  // staging touched nothing visible
    ASSERT_TRUE(world.staging->Discard().ok());
    EXPECT_EQ(Snapshot(world.backing), before);
    EXPECT_NE(Snapshot(world.ref), before);  // the workload did change something
  }
}

// A directory the transaction changed things in, replaced behind the daemon's back by a
// symlink to a directory outside the backing root: apply runs as root, and must fail rather
// than create, overwrite, chmod or set xattrs there. Then, the symlink gone and the directory
// back, a re-run completes the transaction.
TEST(Apply, NeverFollowsASymlinkPlantedOnTheWay) {
  World world([](Workload& w) {
    w.Create("dir1/victim", "from the transaction");
    w.Write("dir1/c.txt", 0, "XX");
    w.Chmod("dir1/sub/d.txt", 0666);
    w.SetXattr("dir1/sub/d.txt", "user.planted", "1");
  });
  const std::string outside = world.tmp.path() + "/outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((outside + "/sub").c_str(), 0755), 0);
  WriteFile(outside + "/victim", "precious");
  WriteFile(outside + "/c.txt", "outside");
  WriteFile(outside + "/sub/d.txt", "outside");
  ASSERT_EQ(::chmod((outside + "/sub/d.txt").c_str(), 0600), 0);
  const std::string dir1 = world.backing + "/dir1", aside = world.tmp.path() + "/dir1-aside";
  ASSERT_EQ(::rename(dir1.c_str(), aside.c_str()), 0);
  ASSERT_EQ(::symlink(outside.c_str(), dir1.c_str()), 0);

  Status s = ApplyTransaction(world.target(), world.ops);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("symlink"), std::string::npos) << s.ToString();
  EXPECT_EQ(ReadFile(outside + "/victim"), "precious");
  EXPECT_EQ(ReadFile(outside + "/c.txt"), "outside");
  struct stat st;
  ASSERT_EQ(::stat((outside + "/sub/d.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_LT(::getxattr((outside + "/sub/d.txt").c_str(), "user.planted", nullptr, 0), 0);

  ASSERT_EQ(::unlink(dir1.c_str()), 0);
  ASSERT_EQ(::rename(aside.c_str(), dir1.c_str()), 0);
  s = ApplyTransaction(world.target(), world.ops);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
}

// The same with a file: a name replaced by another file (by a hard link to a file outside the
// transaction, say) is not written through; the content goes only into the object changed.
TEST(Apply, WritesOnlyTheObjectTheTransactionChanged) {
  World world([](Workload& w) { w.Write("a.txt", 0, "XX"); });
  const std::string other = world.tmp.path() + "/other";
  WriteFile(other, "someone else's");
  const std::string a = world.backing + "/a.txt";
  ASSERT_EQ(::unlink(a.c_str()), 0);
  ASSERT_EQ(::link(other.c_str(), a.c_str()), 0);
  Status s = ApplyTransaction(world.target(), world.ops);
  EXPECT_EQ(s.code(), ESTALE) << s.ToString();
  EXPECT_EQ(ReadFile(other), "someone else's");
}

TEST(Apply, InconsistentOpsAreRefusedBeforeAnyChange) {
  World world([](Workload&) {});
  std::vector<Op> ops = {
      {.kind = OpKind::kUnlink, .object = ObjectId::Existing(1, 2), .path = "x"},
      {.kind = OpKind::kSetattr,
       .object = ObjectId::Existing(1, 3),
       .path = "x",
       .mode = 0600,
       .set_mask = kSetMode},
  };
  int changes = 0;
  MutationHook count = [&](const std::string&) {
    ++changes;
    return Status::Ok();
  };
  Status s = ApplyTransaction(world.target(), ops, count);
  EXPECT_EQ(s.code(), EINVAL) << s.ToString();
  EXPECT_EQ(changes, 0);
}

// With `let_in`, the content of a file written in place with a MiB or more comes after every
// other change, and the caller is told which files are left before it: readers can go on with
// the rest. The file's own changes keep their order.
TEST(Apply, BigContentInPlaceIsWrittenAfterTheRestIsLetIn) {
  World world(LateBigWrite);
  const ObjectId big = world.w->Original("big.bin");
  const std::string old_big = ReadWhole(world.backing + "/big.bin");
  std::vector<std::string> steps;
  MutationHook record = [&](const std::string& what) {
    steps.push_back(what);
    return Status::Ok();
  };
  size_t at_let_in = 0;
  bool let_in_called = false;
  LetReadersIn let_in = [&](const std::vector<ObjectId>& late) {
    let_in_called = true;
    at_let_in = steps.size();
    EXPECT_EQ(late, std::vector<ObjectId>{big});
    // Everything else is there; the big file is as it was.
    EXPECT_EQ(ReadWhole(world.backing + "/moved/c.txt"), "charlie");
    EXPECT_EQ(ReadWhole(world.backing + "/new.txt"), "fresh");
    EXPECT_EQ(ReadWhole(world.backing + "/a.txt"), ReadWhole(world.ref + "/a.txt"));
    EXPECT_EQ(ReadWhole(world.backing + "/big.bin"), old_big);
  };
  auto changes = ApplyChanges(world.target(), world.ops, record, nullptr, nullptr, let_in);
  ASSERT_TRUE(changes.ok()) << changes.status().ToString();
  ASSERT_TRUE(let_in_called);
  ASSERT_LT(at_let_in, steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const bool of_big = steps[i].find("big.bin") != std::string::npos;
    EXPECT_EQ(of_big, i >= at_let_in) << steps[i];
  }
  ASSERT_TRUE(SyncApplied(*changes).ok());
  ASSERT_TRUE(CleanupAppliedTransaction(world.target()).ok());
  EXPECT_EQ(Snapshot(world.backing), Snapshot(world.ref));
  struct stat st;
  ASSERT_EQ(::stat((world.backing + "/big.bin").c_str(), &st), 0);
  EXPECT_EQ(ObjectId::Existing(st.st_dev, st.st_ino), big);  // written in place
}

// Below kLateDataMin nothing is worth letting readers in early for: the order stays the log's,
// and the caller is still called, with no file left.
TEST(Apply, SmallContentNamesNoFileLeft) {
  World world(Mixed);
  std::vector<ObjectId> late{ObjectId::Existing(1, 1)};
  auto changes = ApplyChanges(world.target(), world.ops, nullptr, nullptr, nullptr,
                              [&](const std::vector<ObjectId>& l) { late = l; });
  ASSERT_TRUE(changes.ok()) << changes.status().ToString();
  EXPECT_TRUE(late.empty());
}

}  // namespace
}  // namespace ktmfs::fstx

#include "fs/control/task_bindings.h"

#include <gtest/gtest.h>

#include <array>
#include <map>

namespace ktmfs::fs {
namespace {

// A made-up process table:  1 init -> 100 sshd -> 200 bash (uid 1000) -> 300 make -> 400 cc
// with 201 a second thread of bash, and 500 another user's shell under init.
class FakeProc : public ProcReader {
 public:
  FakeProc() {
    Add(1, 1, 0, 0, 10);
    Add(100, 100, 1, 0, 20);
    Add(200, 200, 100, 1000, 30);
    Add(201, 200, 100, 1000, 31);
    Add(300, 300, 200, 1000, 40);
    Add(400, 400, 300, 1000, 50);
    Add(500, 500, 1, 2000, 60);
  }
  void Add(pid_t tid, pid_t tgid, pid_t ppid, uid_t uid, uint64_t start) {
    TaskInfo t;
    t.tid = tid;
    t.tgid = tgid;
    t.ppid = ppid;
    t.uid = uid;
    t.start_time = start;
    tasks[tid] = t;
    ++reads_allowed;
  }
  void Exit(pid_t tid) { tasks.erase(tid); }
  int read_error = 0;  // what every Read fails with, if set
  uint64_t NowTicks() override { return now; }
  uint64_t now = 35;  // bash is running; make, cc and 500 start after any begin
  // Processes "started" by now (the table holds later ones too, with their start times).
  std::vector<pid_t> Children(pid_t pid) override {
    std::vector<pid_t> out;
    for (const auto& [tid, t] : tasks)
      if (t.ppid == pid && t.tid == t.tgid && t.start_time <= now) out.push_back(tid);
    return out;
  }
  Result<TaskInfo> Read(pid_t tid) override {
    ++reads;
    if (read_error != 0) return Status::Error(read_error, "/proc/" + std::to_string(tid));
    auto it = tasks.find(tid);
    if (it == tasks.end()) return Status::Error(ENOENT, "gone");
    return it->second;
  }
  // What /proc/PID/stat alone tells: no tgid, no uid.
  Result<TaskInfo> ReadStat(pid_t tid) override {
    ++stat_reads;
    auto it = tasks.find(tid);
    if (it == tasks.end()) return Status::Error(ENOENT, "gone");
    TaskInfo t = it->second;
    t.tgid = 0;
    t.uid = 0;
    return t;
  }
  // Each made-up user's group has its uid for number; `creds` overrides a task's ids.
  Result<TaskCredentials> Credentials(pid_t tid) override {
    if (auto c = creds.find(tid); c != creds.end()) return c->second;
    auto it = tasks.find(tid);
    if (it == tasks.end()) return Status::Error(ENOENT, "gone");
    TaskCredentials c;
    for (int i = 0; i < 4; ++i) {
      c.uid[i] = it->second.uid;
      c.gid[i] = it->second.uid;
    }
    return c;
  }
  std::map<pid_t, TaskInfo> tasks;
  std::map<pid_t, TaskCredentials> creds;
  int reads = 0;
  int stat_reads = 0;
  int reads_allowed = 0;
};

// A binder with the ids of a made-up user (root is privileged).
Binder User(uid_t uid) {
  return Binder{uid, uid, uid == 0};
}

TaskCredentials Creds(std::array<uid_t, 4> uids, std::array<gid_t, 4> gids, bool dumpable = true) {
  TaskCredentials c;
  for (int i = 0; i < 4; ++i) {
    c.uid[i] = uids[i];
    c.gid[i] = gids[i];
  }
  c.dumpable = dumpable;
  return c;
}

class TaskBindingsTest : public ::testing::Test {
 protected:
  FakeProc proc;
  TaskBindings bindings{&proc};
  Guid t1 = Guid::Random();
  Guid t2 = Guid::Random();
};

TEST_F(TaskBindingsTest, NothingBoundCostsNoProcRead) {
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  EXPECT_EQ(proc.reads, 0);
  EXPECT_FALSE(bindings.Lookup(0).has_value());
}

TEST_F(TaskBindingsTest, TreeScopeCoversDescendantsAndThreadsButNotAncestors) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(200), t1);
  EXPECT_EQ(bindings.Lookup(201), t1);  // another thread of the bound process
  EXPECT_EQ(bindings.Lookup(300), t1);
  EXPECT_EQ(bindings.Lookup(400), t1);
  EXPECT_FALSE(bindings.Lookup(100).has_value());
  EXPECT_FALSE(bindings.Lookup(500).has_value());
}

TEST_F(TaskBindingsTest, TreeScopeLeavesOutChildrenStartedBeforeTheBegin) {
  proc.now = 45;  // make (300, started at 40) is already running; cc (400) is not yet
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(200), t1);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_FALSE(bindings.Lookup(400).has_value());  // below make, so outside too
  proc.Add(600, 600, 200, 1000, 46);               // started by the shell after the begin
  EXPECT_EQ(bindings.Lookup(600), t1);
}

// The start-time clock ticks every 10 ms: a child started in the tick of the begin, just before
// it, is known from the children the bound process had when it was bound.
TEST_F(TaskBindingsTest, TreeScopeLeavesOutAChildStartedInTheSameTickBeforeTheBegin) {
  proc.now = 40;  // make (300) started in this very tick, before the begin
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  proc.Add(600, 600, 200, 1000, 40);  // started in the same tick, after the begin
  EXPECT_EQ(bindings.Lookup(600), t1);
}

TEST_F(TaskBindingsTest, ProcessScopeCoversItsThreadsOnly) {
  ASSERT_TRUE(
      bindings.Bind(t1, Scope::kProcess, 201, User(1000)).ok());  // any thread names the process
  EXPECT_EQ(bindings.Get(t1)->pid, 200);
  EXPECT_EQ(bindings.Lookup(200), t1);
  EXPECT_EQ(bindings.Lookup(201), t1);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
}

TEST_F(TaskBindingsTest, ThreadScopeCoversOneThread) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kThread, 201, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(201), t1);
  EXPECT_FALSE(bindings.Lookup(200).has_value());
  // Each thread can run its own transaction.
  ASSERT_TRUE(bindings.Bind(t2, Scope::kThread, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(200), t2);
  EXPECT_EQ(bindings.Lookup(201), t1);
}

TEST_F(TaskBindingsTest, AnotherUsersProcessCannotBeBoundExceptByRoot) {
  Status s = bindings.Bind(t1, Scope::kTree, 500, User(1000));
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("500"), std::string::npos);
  EXPECT_TRUE(bindings.Bind(t1, Scope::kTree, 500, User(0)).ok());
}

TEST_F(TaskBindingsTest, NoSuchProcess) {
  EXPECT_EQ(bindings.Bind(t1, Scope::kTree, 999, User(0)).code(), ESRCH);
}

TEST_F(TaskBindingsTest, ATaskAlreadyInsideCannotBeBoundAgain) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Bind(t2, Scope::kProcess, 300, User(1000)).code(), EBUSY);
  EXPECT_EQ(bindings.Bind(t1, Scope::kProcess, 500, User(0)).code(), EBUSY);  // t1 already bound
}

TEST_F(TaskBindingsTest, UnbindEndsMembership) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(400), t1);
  bindings.Unbind(t1);
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  EXPECT_TRUE(bindings.empty());
}

TEST_F(TaskBindingsTest, AReusedPidDoesNotInheritTheTransaction) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 300, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(400), t1);
  // make (300) and cc (400) exit; new processes get the same pids.
  proc.Exit(300);
  proc.Exit(400);
  proc.Add(300, 300, 100, 1000, 70);
  proc.Add(400, 400, 300, 1000, 80);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  std::vector<Guid> orphans = bindings.FindOrphans();
  ASSERT_EQ(orphans.size(), 1u);
  EXPECT_EQ(orphans[0], t1);
}

TEST_F(TaskBindingsTest, ExitedAndZombieProcessesAreOrphans) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kProcess, 300, User(1000)).ok());
  ASSERT_TRUE(bindings.Bind(t2, Scope::kProcess, 500, User(0)).ok());
  EXPECT_TRUE(bindings.FindOrphans().empty());
  proc.tasks[300].state = 'Z';
  proc.Exit(500);
  std::vector<Guid> orphans = bindings.FindOrphans();
  EXPECT_EQ(orphans.size(), 2u);
}

// The daemon out of descriptors cannot read /proc: that tells nothing of the bound tasks.
// Before, it made every bound transaction an orphan, rolled back while its process ran.
TEST_F(TaskBindingsTest, AProcReadThatFailsForTheDaemonOrphansNothing) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kProcess, 300, User(1000)).ok());
  proc.read_error = EMFILE;
  EXPECT_TRUE(bindings.FindOrphans().empty());
  proc.read_error = ENOMEM;
  EXPECT_TRUE(bindings.FindOrphans().empty());
  proc.read_error = 0;
  proc.Exit(300);
  EXPECT_EQ(bindings.FindOrphans(), std::vector<Guid>{t1});
}

TEST_F(TaskBindingsTest, CachedAnswersAreDroppedWhenBindingsChange) {
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(400), t1);
  int reads = proc.reads, stat_reads = proc.stat_reads;
  EXPECT_EQ(bindings.Lookup(400), t1);
  // Only the identity check, no ancestor walk.
  EXPECT_EQ(proc.stat_reads, stat_reads + 1);
  EXPECT_EQ(proc.reads, reads);
  bindings.Unbind(t1);
  ASSERT_TRUE(bindings.Bind(t2, Scope::kProcess, 400, User(1000)).ok());
  reads = proc.reads;
  EXPECT_EQ(bindings.Lookup(400), t2);
  // Worked out again, from what was read of the same tasks before.
  EXPECT_EQ(proc.reads, reads);
}

TEST_F(TaskBindingsTest, BindingAKnownTaskAgainReadsOnlyItsStat) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kProcess, 300, User(1000)).ok());
  bindings.Unbind(t1);
  const int reads = proc.reads;
  ASSERT_TRUE(bindings.Bind(t2, Scope::kProcess, 300, User(1000)).ok());
  EXPECT_EQ(proc.reads, reads);
  EXPECT_EQ(bindings.Lookup(300), t2);
  bindings.Unbind(t2);
  // Its state is read afresh each time: a zombie is not bound.
  proc.tasks[300].state = 'Z';
  EXPECT_EQ(bindings.Bind(t1, Scope::kProcess, 300, User(1000)).code(), ESRCH);
  // Nor is a newer task that took its pid.
  proc.Exit(300);
  proc.Add(300, 300, 200, 2000, 80);
  ASSERT_TRUE(bindings.Bind(t1, Scope::kProcess, 300, User(0)).ok());
  EXPECT_EQ(bindings.Get(t1)->start_time, 80u);
  EXPECT_EQ(bindings.Get(t1)->uid, 2000u);
}

TEST_F(TaskBindingsTest, AnOrphanLeavesTheTreeEvenWhenItsOldParentsPidIsReused) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, User(1000)).ok());
  EXPECT_EQ(bindings.Lookup(400), t1);
  // make (300) exits: cc (400) is handed to init, and a new child of bash gets pid 300.
  proc.Exit(300);
  proc.tasks[400].ppid = 1;
  proc.Add(300, 300, 200, 1000, 70);
  ASSERT_TRUE(
      bindings.Bind(t2, Scope::kProcess, 500, User(0)).ok());  // answers are worked out again
  EXPECT_EQ(bindings.Lookup(300), t1);                         // the new child is in the tree
  EXPECT_FALSE(bindings.Lookup(400).has_value());  // cc is not any more: its parent is init
}

TEST(MayBindTest, FollowsThePtraceRule) {
  const Binder u = User(1000);
  EXPECT_TRUE(MayBind(7, Creds({1000, 1000, 1000, 1000}, {1000, 1000, 1000, 1000}), u).ok());
  // The filesystem ids do not count (ptrace looks at real, effective and saved ones).
  EXPECT_TRUE(MayBind(7, Creds({1000, 1000, 1000, 0}, {1000, 1000, 1000, 0}), u).ok());
  // A setuid-root helper of the same user: real uid its own, effective (and saved) 0.
  Status s = MayBind(7, Creds({1000, 0, 0, 0}, {1000, 1000, 1000, 1000}), u);
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("process 7 runs with effective uid 0"), std::string::npos)
      << s.message();
  // Dropped back to the real uid but able to regain 0 (saved uid).
  EXPECT_EQ(MayBind(7, Creds({1000, 1000, 0, 1000}, {1000, 1000, 1000, 1000}), u).code(), EPERM);
  // setgid helpers and other groups.
  EXPECT_EQ(MayBind(7, Creds({1000, 1000, 1000, 1000}, {1000, 42, 42, 42}), u).code(), EPERM);
  EXPECT_EQ(MayBind(7, Creds({1000, 1000, 1000, 1000}, {42, 42, 42, 42}), u).code(), EPERM);
  // Another user's process.
  s = MayBind(7, Creds({2000, 2000, 2000, 2000}, {1000, 1000, 1000, 1000}), u);
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("belongs to uid 2000"), std::string::npos) << s.message();
  // All ids right, but not dumpable (it changed ids, or ran a set-id program and came back).
  s = MayBind(7, Creds({1000, 1000, 1000, 1000}, {1000, 1000, 1000, 1000}, false), u);
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("not dumpable"), std::string::npos) << s.message();
  // Root binds anything.
  EXPECT_TRUE(MayBind(7, Creds({1000, 0, 0, 0}, {1000, 0, 0, 0}, false), User(0)).ok());
}

TEST_F(TaskBindingsTest, ASetuidHelperOfTheSameUserIsBoundOnlyByRoot) {
  proc.creds[400] = Creds({1000, 0, 0, 0}, {1000, 1000, 1000, 1000}, false);
  Status s = bindings.Bind(t1, Scope::kProcess, 400, User(1000));
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("400"), std::string::npos);
  EXPECT_FALSE(bindings.Lookup(400).has_value());
  EXPECT_TRUE(bindings.Bind(t1, Scope::kProcess, 400, User(0)).ok());
}

TEST_F(TaskBindingsTest, AProcessIsCheckedThroughItsLeaderToo) {
  // Thread 201 of bash looks plain, but bash (200) itself runs setuid.
  proc.creds[200] = Creds({1000, 0, 0, 0}, {1000, 1000, 1000, 1000});
  EXPECT_EQ(bindings.Bind(t1, Scope::kProcess, 201, User(1000)).code(), EPERM);
  // Bound alone, the thread is what it looks like.
  EXPECT_TRUE(bindings.Bind(t1, Scope::kThread, 201, User(1000)).ok());
}

}  // namespace
}  // namespace ktmfs::fs

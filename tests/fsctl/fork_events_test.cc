#include "fs/control/fork_events.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <map>

#include "fs/control/task_bindings.h"

namespace ktmfs::fs {
namespace {

// A made-up kernel: a process table that /proc shows, and the fork and exit events it sends
// while someone listens. An exiting process is reaped at once and its children go to init.
//   1 init -> 100 sshd -> 200 bash (uid 1000)
class FakeKernel : public ProcReader, public ProcEventSource {
 public:
  FakeKernel() {
    Put(1, 1, 0, 10);
    Put(100, 100, 1, 20);
    Put(200, 200, 100, 30);
  }

  // ProcReader
  Result<TaskInfo> Read(pid_t tid) override {
    auto it = tasks.find(tid);
    if (it == tasks.end()) return Status::Error(ENOENT, "gone");
    return it->second;
  }
  uint64_t NowTicks() override { return now; }
  std::vector<pid_t> Children(pid_t pid) override {
    std::vector<pid_t> out;
    for (const auto& [tid, t] : tasks)
      if (t.ppid == pid && t.tid == t.tgid) out.push_back(tid);
    return out;
  }
  Result<TaskCredentials> Credentials(pid_t tid) override {
    auto it = tasks.find(tid);
    if (it == tasks.end()) return Status::Error(ENOENT, "gone");
    TaskCredentials c;
    for (int i = 0; i < 4; ++i)
      c.uid[i] = c.gid[i] = 1000;
    return c;
  }

  // ProcEventSource
  Status Listen(bool on) override {
    if (refuse_listen) return Status::Error(EPERM, "joining the proc events group");
    listening = on;
    ++listen_calls;
    return Status::Ok();
  }
  Status Read(std::vector<ProcEvent>* out) override {
    out->insert(out->end(), queue.begin(), queue.end());
    queue.clear();
    if (after_read) std::exchange(after_read, nullptr)();
    return Status::Ok();
  }

  // The process `child` forked by `parent`, started now.
  void Fork(pid_t parent, pid_t child) {
    Put(child, child, parent, ++now);
    Send({ProcEvent::Kind::kFork, parent, child, child});
  }
  void Thread(pid_t tgid, pid_t tid) {
    Put(tid, tgid, tasks[tgid].ppid, ++now);
    Send({ProcEvent::Kind::kFork, tasks[tgid].ppid, tid, tgid});
  }
  void Exit(pid_t tid) {
    const TaskInfo t = tasks.at(tid);
    tasks.erase(tid);
    Send({ProcEvent::Kind::kExit, 0, tid, t.tgid});
    if (tid != t.tgid) return;
    for (auto& [c, ct] : tasks)
      if (ct.ppid == tid) ct.ppid = 1;
  }
  void Send(ProcEvent e) {
    if (listening) queue.push_back(e);
  }
  void Put(pid_t tid, pid_t tgid, pid_t ppid, uint64_t start) {
    TaskInfo t;
    t.tid = tid;
    t.tgid = tgid;
    t.ppid = ppid;
    t.uid = 1000;
    t.start_time = start;
    tasks[tid] = t;
  }

  std::map<pid_t, TaskInfo> tasks;
  uint64_t now = 35;
  bool listening = false;
  bool refuse_listen = false;
  int listen_calls = 0;
  std::vector<ProcEvent> queue;
  std::function<void()> after_read;  // what happens right after the events are read
};

const Binder kUser{1000, 1000, false};

class ForkEventsTest : public ::testing::Test {
 protected:
  void SetUp() override { bindings.UseForkEvents(&forks); }

  FakeKernel kernel;
  ForkTracker forks{&kernel, &kernel};
  TaskBindings bindings{&kernel};
  Guid t1 = Guid::Random();
  Guid t2 = Guid::Random();
};

// The double fork of `( (cmd) & )`: the subshell exits at once, its child goes to init.
TEST_F(ForkEventsTest, AChildReparentedToInitStaysInside) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(200, 300);
  kernel.Fork(300, 400);
  kernel.Exit(300);
  ASSERT_EQ(kernel.tasks[400].ppid, 1);
  EXPECT_EQ(bindings.Lookup(400), t1);
  kernel.Fork(400, 500);  // and what it starts after
  EXPECT_EQ(bindings.Lookup(500), t1);
  EXPECT_FALSE(bindings.Lookup(100).has_value());
}

// What the parent-chain walk alone gives (an unprivileged daemon): the child leaves.
TEST_F(ForkEventsTest, WithoutEventsTheWalkLosesAReparentedChild) {
  TaskBindings walk_only{&kernel};
  ASSERT_TRUE(walk_only.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Put(300, 300, 200, 40);
  kernel.Put(400, 400, 300, 41);
  EXPECT_EQ(walk_only.Lookup(400), t1);
  walk_only.Unbind(t1);  // forget the cached answer
  ASSERT_TRUE(walk_only.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.tasks.erase(300);
  kernel.tasks[400].ppid = 1;
  EXPECT_FALSE(walk_only.Lookup(400).has_value());
}

// Events not yet read when the request comes are read before the answer: the subshell has
// exited before the record saw its fork, so /proc cannot say when it started.
TEST_F(ForkEventsTest, ForksNotYetReadAreReadBeforeAnswering) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(200, 300);
  kernel.Fork(300, 400);
  kernel.Exit(300);
  EXPECT_EQ(forks.records(), 0u);
  EXPECT_EQ(forks.Lookup(400, kernel.tasks[400].start_time), t1);
  EXPECT_EQ(forks.records(), 1u);  // 300 was dropped at its exit
}

TEST_F(ForkEventsTest, ChildrenStartedBeforeTheBindingStayOutside) {
  kernel.Put(150, 150, 1, 25);  // another user's tree is bound already, so events come
  ASSERT_TRUE(bindings.Bind(t2, Scope::kTree, 150, {0, 0, true}).ok());
  kernel.Fork(200, 300);  // a background job, its event still queued
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(300, 310);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_FALSE(bindings.Lookup(310).has_value());
  kernel.Fork(200, 320);
  EXPECT_EQ(bindings.Lookup(320), t1);
}

// A fork between the last events read and the binding: the child is among the children the
// bound process has, so both the record and the walk leave it out.
TEST_F(ForkEventsTest, AForkDuringTheBindingIsLeftOutByBoth) {
  kernel.after_read = [this] { kernel.Fork(200, 300); };
  kernel.listening = true;
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  ASSERT_EQ(bindings.Get(t1)->earlier_children.size(), 1u);
  kernel.Fork(300, 310);
  kernel.Exit(300);
  EXPECT_FALSE(bindings.Lookup(310).has_value());
  EXPECT_EQ(forks.records(), 0u);
}

TEST_F(ForkEventsTest, AProcessStaysUntilItsLastThreadExits) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(200, 300);
  kernel.Thread(300, 301);
  // Read before the leader's exit: an exit in the same read makes the fork's /proc entry
  // untrustworthy (the pid may be reused), and the process is then followed by its parents.
  forks.Pump();
  kernel.Exit(300);  // the leader first: the process lives on in 301
  const uint64_t start = 36;
  EXPECT_EQ(forks.Lookup(300, start), t1);
  kernel.Exit(301);
  EXPECT_FALSE(forks.Lookup(300, start).has_value());
  EXPECT_EQ(forks.records(), 0u);
}

TEST_F(ForkEventsTest, AReusedPidIsOutside) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(200, 300);
  kernel.Exit(300);
  kernel.Fork(100, 300);  // sshd's new child, same pid
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_FALSE(forks.Lookup(300, kernel.tasks[300].start_time).has_value());
}

TEST_F(ForkEventsTest, TheBoundProcessExitingFreesItsPid) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Exit(200);
  kernel.Fork(100, 200);  // the reaper has not unbound yet; the pid is someone else's now
  kernel.Fork(200, 300);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  EXPECT_EQ(forks.records(), 0u);
}

// After lost events, records are checked against /proc and attached descendants re-read.
TEST_F(ForkEventsTest, LostEventsAreMadeUpFromProc) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  kernel.Fork(200, 300);
  kernel.Fork(300, 400);
  kernel.Exit(300);
  forks.Pump();
  ASSERT_EQ(forks.records(), 1u);  // 400, under init now
  // Lost: 400's exit and fork of its pid by an outsider, 400's sibling 410 forked by 200.
  kernel.listening = false;
  kernel.Exit(400);
  kernel.Fork(100, 400);
  kernel.Fork(200, 410);
  kernel.Fork(410, 420);
  kernel.listening = true;
  kernel.Send({ProcEvent::Kind::kLost, 0, 0, 0});
  EXPECT_FALSE(forks.Lookup(400, kernel.tasks[400].start_time).has_value());
  EXPECT_EQ(forks.Lookup(410, kernel.tasks[410].start_time), t1);
  EXPECT_EQ(forks.Lookup(420, kernel.tasks[420].start_time), t1);
  EXPECT_EQ(forks.records(), 2u);
}

TEST_F(ForkEventsTest, TheRecordEndsWithTheLastTree) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  EXPECT_TRUE(kernel.listening);
  kernel.Fork(200, 300);
  forks.Pump();
  EXPECT_EQ(forks.records(), 1u);
  bindings.Unbind(t1);
  EXPECT_EQ(forks.records(), 0u);
  EXPECT_FALSE(kernel.listening);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
}

TEST_F(ForkEventsTest, ThreadAndProcessScopesNeedNoEvents) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kThread, 200, kUser).ok());
  ASSERT_TRUE(bindings.Bind(t2, Scope::kProcess, 100, {0, 0, true}).ok());
  EXPECT_EQ(kernel.listen_calls, 0);
  kernel.Fork(200, 300);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
}

TEST_F(ForkEventsTest, ARefusedListenFallsBackToTheWalk) {
  kernel.refuse_listen = true;
  kernel.Put(300, 300, 200, 30);  // started before the binding, in the same tick
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  EXPECT_EQ(bindings.Get(t1)->earlier_children.size(), 1u);
  kernel.Put(400, 400, 200, 40);
  EXPECT_EQ(bindings.Lookup(400), t1);
  EXPECT_FALSE(bindings.Lookup(300).has_value());
  bindings.Unbind(t1);
}

TEST_F(ForkEventsTest, TheRecordIsBounded) {
  ASSERT_TRUE(bindings.Bind(t1, Scope::kTree, 200, kUser).ok());
  const pid_t first = 1000;
  const pid_t last = first + static_cast<pid_t>(ForkTracker::kMaxRecords) + 10;
  for (pid_t p = first; p <= last; ++p)
    kernel.Fork(200, p);
  forks.Pump();
  EXPECT_EQ(forks.records(), ForkTracker::kMaxRecords);
  // The ones left out are still found by their parent.
  EXPECT_EQ(bindings.Lookup(last), t1);
}

// The kernel's own events, where this test may listen (root, initial pid namespace): a
// grandchild whose parent exited is recorded in the tree of this very process.
TEST(ProcConnectorTest, RecordsADoubleForkedGrandchild) {
  auto connector = ProcConnector::Open();
  if (!connector.ok()) GTEST_SKIP() << connector.status().ToString();
  SystemProcReader proc;
  ForkTracker forks(&proc, connector->get());
  ASSERT_TRUE(forks.StartThread().ok());
  auto self = proc.Read(getpid());
  ASSERT_TRUE(self.ok());
  std::vector<std::pair<pid_t, uint64_t>> earlier;
  const Guid tx = Guid::Random();
  ASSERT_TRUE(forks.AddTree(tx, getpid(), self->start_time, 0, &earlier).ok());

  int to_grandchild[2], from_child[2];
  ASSERT_EQ(pipe(to_grandchild), 0);
  ASSERT_EQ(pipe(from_child), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const pid_t grandchild = fork();
    if (grandchild == 0) {
      char c;
      (void)!read(to_grandchild[0], &c, 1);  // until the test has looked
      _exit(0);
    }
    (void)!write(from_child[1], &grandchild, sizeof grandchild);
    _exit(0);
  }
  pid_t grandchild = 0;
  ASSERT_EQ(read(from_child[0], &grandchild, sizeof grandchild),
            static_cast<ssize_t>(sizeof grandchild));
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  auto g = proc.Read(grandchild);
  ASSERT_TRUE(g.ok());
  EXPECT_NE(g->ppid, getpid());
  EXPECT_EQ(forks.Lookup(grandchild, g->start_time), tx);
  (void)!write(to_grandchild[1], "x", 1);
  for (int fd : {to_grandchild[0], to_grandchild[1], from_child[0], from_child[1]})
    close(fd);
  forks.RemoveTree(tx);
  EXPECT_EQ(forks.records(), 0u);
}

}  // namespace
}  // namespace ktmfs::fs

#include "fs/control/proc_reader.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <thread>

namespace ktmfs::fs {
namespace {

TEST(ProcReaderTest, ParsesCommandNamesWithSpacesAndParentheses) {
  std::string stat =
      "4242 (evil) (name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
  std::string status =
      "Name:\tevil\nUmask:\t0022\nState:\tS\nTgid:\t4240\nPid:\t4242\n"
      "PPid:\t17\nUid:\t1000\t1000\t1000\t1000\n";
  auto info = ParseProcFiles(4242, stat, status);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->tid, 4242);
  EXPECT_EQ(info->tgid, 4240);
  EXPECT_EQ(info->ppid, 17);
  EXPECT_EQ(info->uid, 1000u);
  EXPECT_EQ(info->start_time, 987654u);
  EXPECT_EQ(info->state, 'S');
  EXPECT_FALSE(info->exited());
}

TEST(ProcReaderTest, RejectsTruncatedFiles) {
  EXPECT_FALSE(ParseProcFiles(1, "1 (init) S 0 1", "Tgid:\t1\nUid:\t0\n").ok());
  EXPECT_FALSE(ParseProcFiles(1, "no paren", "Tgid:\t1\nUid:\t0\n").ok());
  std::string stat = "1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
  EXPECT_FALSE(ParseProcFiles(1, stat, "Uid:\t0\n").ok());
}

TEST(ProcReaderTest, ParsesCredentials) {
  const std::string status =
      "Name:\tsleep\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\nGroups:\t\n";
  auto c = ParseCredentials(9, status, 0, 0);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->uid[0], 1000u);
  EXPECT_EQ(c->uid[1], 0u);
  EXPECT_EQ(c->uid[2], 0u);
  EXPECT_EQ(c->gid[3], 100u);
  // /proc/9 is owned by root:root, the effective uid but not the effective gid: not dumpable.
  EXPECT_FALSE(c->dumpable);
  const std::string plain = "Uid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n";
  EXPECT_TRUE(ParseCredentials(9, plain, 1000, 100)->dumpable);
  EXPECT_FALSE(ParseCredentials(9, plain, 0, 0)->dumpable);
  EXPECT_FALSE(ParseCredentials(9, "Uid:\t1000\t1000\n", 0, 0).ok());
  EXPECT_FALSE(ParseCredentials(9, "Name:\tx\n", 0, 0).ok());
}

TEST(ProcReaderTest, CredentialsOfThisProcess) {
  SystemProcReader reader;
  auto c = reader.Credentials(getpid());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->uid[0], getuid());
  EXPECT_EQ(c->uid[1], geteuid());
  EXPECT_EQ(c->gid[0], getgid());
  EXPECT_TRUE(c->dumpable);
  EXPECT_FALSE(reader.Credentials(-1).ok());
}

TEST(ProcReaderTest, ReadsThisProcessAndAThread) {
  SystemProcReader proc;
  auto self = proc.Read(getpid());
  ASSERT_TRUE(self.ok()) << self.status().ToString();
  EXPECT_EQ(self->tgid, getpid());
  EXPECT_EQ(self->ppid, getppid());
  EXPECT_EQ(self->uid, getuid());
  EXPECT_GT(self->start_time, 0u);

  pid_t tid = 0;
  Result<TaskInfo> thread = Status::NotFound("not read");
  std::thread t([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    thread = proc.Read(tid);
  });
  t.join();
  ASSERT_TRUE(thread.ok()) << thread.status().ToString();
  EXPECT_EQ(thread->tid, tid);
  EXPECT_EQ(thread->tgid, getpid());
  EXPECT_NE(tid, getpid());
}

TEST(ProcReaderTest, NowIsOnTheClockOfStartTimes) {
  SystemProcReader proc;
  auto self = proc.Read(getpid());
  ASSERT_TRUE(self.ok());
  uint64_t now = proc.NowTicks();
  EXPECT_GE(now, self->start_time);
  EXPECT_LT(now - self->start_time, 100u * 3600);  // this test started less than an hour ago
}

TEST(ProcReaderTest, MissingTaskIsAnError) {
  SystemProcReader proc;
  EXPECT_FALSE(proc.Read(0).ok());
  EXPECT_FALSE(proc.Read(-5).ok());
}

TEST(ProcReaderTest, SameTaskUntilItExits) {
  SystemProcReader proc;
  auto self = proc.ReadStat(getpid());
  ASSERT_TRUE(self.ok());
  EXPECT_TRUE(proc.SameTask(getpid(), self->start_time));
  EXPECT_TRUE(proc.SameTask(getpid(), self->start_time));  // now from what it kept
  EXPECT_FALSE(proc.SameTask(getpid(), self->start_time + 1));
  // A thread, asked about while alive and after it is gone (its id may even be in use again).
  pid_t tid = 0;
  uint64_t start = 0;
  bool alive_answer = false;
  std::thread t([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    auto info = proc.ReadStat(tid);
    start = info.ok() ? info->start_time : 0;
    alive_answer = proc.SameTask(tid, start);
  });
  t.join();
  EXPECT_TRUE(alive_answer);
  EXPECT_FALSE(proc.SameTask(tid, start));
  EXPECT_FALSE(proc.SameTask(0, 0));
}

}  // namespace
}  // namespace ktmfs::fs

// WriterIdentity: while it lives, the thread writes as the writer for the space rules (fsuid,
// fsgid, no CAP_SYS_RESOURCE) and keeps every other capability; afterwards it is as before, and
// other threads never change.
#include "fs/tx/writer_identity.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ktmfs::fstx {
namespace {

// The calling thread's credentials, as the kernel reports them.
struct ThreadCreds {
  unsigned long fsuid = 0, fsgid = 0;
  unsigned long long cap_eff = 0;
  std::string groups;  // as listed
};

ThreadCreds Read() {
  std::ifstream in("/proc/thread-self/status");
  ThreadCreds c;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    unsigned long real, effective, saved, fs;
    fields >> key;
    if (key == "Uid:" && fields >> real >> effective >> saved >> fs) c.fsuid = fs;
    if (key == "Gid:" && fields >> real >> effective >> saved >> fs) c.fsgid = fs;
    if (key == "CapEff:") fields >> std::hex >> c.cap_eff;
    if (key == "Groups:") {
      std::string g;
      while (fields >> g)
        c.groups += (c.groups.empty() ? "" : " ") + g;
    }
  }
  return c;
}

constexpr unsigned long long Bit(int cap) {
  return 1ull << cap;
}

TEST(WriterIdentity, WritesAsTheWriterWithoutTheReserveAndKeepsTheRest) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: only root's writes could take the reserve";
  // Containers often run root without CAP_SYS_RESOURCE (its bounding set): the fsuid then is
  // what gives root the reserve, and what the scope must change.
  // Supplementary groups of this thread's own, to see them go and come back.
  std::vector<gid_t> had(64);
  const long n = syscall(SYS_getgroups, had.size(), had.data());
  ASSERT_GE(n, 0);
  had.resize(static_cast<size_t>(n));
  const gid_t mine[] = {4, 27};
  ASSERT_EQ(syscall(SYS_setgroups, 2, mine), 0);
  const ThreadCreds before = Read();
  ASSERT_NE(before.groups.find('4'), std::string::npos);
  // Started before the scope: a thread started inside would copy the scope's credentials.
  std::promise<void> look;
  std::promise<ThreadCreds> seen;
  std::thread other_thread([&] {
    look.get_future().wait();
    seen.set_value(Read());
  });
  {
    WriterIdentity as(1234, 5678);
    EXPECT_TRUE(as.switched());
    const ThreadCreds now = Read();
    EXPECT_EQ(now.fsuid, 1234u);
    EXPECT_EQ(now.fsgid, 5678u);
    EXPECT_EQ(now.cap_eff, before.cap_eff & ~Bit(CAP_SYS_RESOURCE));
    // The daemon's own groups could hold the filesystem's resgid.
    EXPECT_EQ(now.groups, "");
    // Another thread is untouched.
    look.set_value();
    const ThreadCreds other = seen.get_future().get();
    EXPECT_EQ(other.fsuid, before.fsuid);
    EXPECT_EQ(other.cap_eff, before.cap_eff);
  }
  other_thread.join();
  const ThreadCreds after = Read();
  EXPECT_EQ(after.fsuid, before.fsuid);
  EXPECT_EQ(after.fsgid, before.fsgid);
  EXPECT_EQ(after.cap_eff, before.cap_eff);
  EXPECT_EQ(after.groups, before.groups);
  syscall(SYS_setgroups, had.size(), had.data());
}

TEST(WriterIdentity, RootAndRequestsWithoutIdsChangeNothing) {
  const ThreadCreds before = Read();
  for (uid_t uid : {uid_t{0}, static_cast<uid_t>(-1)}) {
    WriterIdentity as(uid, 0);
    EXPECT_FALSE(as.switched());
    const ThreadCreds now = Read();
    EXPECT_EQ(now.fsuid, before.fsuid);
    EXPECT_EQ(now.cap_eff, before.cap_eff);
  }
}

}  // namespace
}  // namespace ktmfs::fstx

// ReadOnlyWatch on a real mount: the answer kept between changes of the mount table, and every
// remount seen.
#include "fs/mount/mount_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "compare_fixture.h"
#include "mount_harness.h"

namespace ktmfs::fs::testing {
namespace {

// The daemon asks at every commit whether its mount is read-only: the answer is kept, and the
// table read again only after it changed, so a remount either way is seen at the next question.
TEST(ReadOnlyWatchTest, SeesEveryRemountAndReadsOnlyAfterOne) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  Mount m;
  ASSERT_EQ(m.Start(src, mnt), "");
  ReadOnlyWatch watch(mnt);
  auto answer = [&] {
    Result<bool> r = watch.Get();
    return r.ok() ? (*r ? "ro" : "rw") : r.status().message();
  };
  EXPECT_EQ(answer(), "rw");
  // With nothing changed the table is not read again. Another test's mount or unmount in this
  // namespace meanwhile would cost a read or two: hence the slack.
  const uint64_t before = watch.reads();
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(answer(), "rw");
  EXPECT_LE(watch.reads() - before, 2u) << "read the table again with nothing changed";
  ASSERT_TRUE(Remount(mnt, true).ok());
  EXPECT_EQ(answer(), "ro");
  // Another mount's change is a change of the table too: read again, same answer.
  std::string other = t.MakeDir("other");
  ASSERT_EQ(RunCommand({"mount", "-t", "tmpfs", "none", other}).exit_code, 0);
  EXPECT_EQ(answer(), "ro");
  EXPECT_EQ(RunCommand({"umount", other}).exit_code, 0);
  ASSERT_TRUE(Remount(mnt, false).ok());
  EXPECT_EQ(answer(), "rw");
  EXPECT_EQ(m.Stop(), "");
  EXPECT_EQ(answer(), "no FUSE filesystem is mounted on " + mnt);
}

// A change the namespace is not told of (a superblock made read-only from another mount
// namespace, say) is seen within a second: here a table that is a plain file, which never
// reports an event, is changed behind the watch.
TEST(ReadOnlyWatchTest, ReadsAgainAfterASecondWithoutAnEvent) {
  TempDir t;
  const std::string table = t.Sub("mountinfo");
  auto write_table = [&](const char* flags) {
    std::ofstream(table) << "40 1 0:50 / /m " << flags << " - fuse.ktmfs src " << flags << "\n";
  };
  write_table("rw");
  ReadOnlyWatch watch("/m", table);
  auto ro = watch.Get();
  ASSERT_TRUE(ro.ok()) << ro.status().message();
  EXPECT_FALSE(*ro);
  write_table("ro");
  const auto changed = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - changed < std::chrono::milliseconds(1100))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ro = watch.Get();
  ASSERT_TRUE(ro.ok()) << ro.status().message();
  EXPECT_TRUE(*ro) << "the change was not seen after a second";
}

}  // namespace
}  // namespace ktmfs::fs::testing

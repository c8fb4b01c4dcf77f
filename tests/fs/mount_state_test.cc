// ReadOnlyWatch on a real mount: the answer kept between changes of the mount table, and every
// remount seen.
#include "fs/mount/mount_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

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
  EXPECT_EQ(answer(), "rw");
  EXPECT_EQ(watch.reads(), 1u) << "read the table again with nothing changed";
  ASSERT_TRUE(Remount(mnt, true).ok());
  EXPECT_EQ(answer(), "ro");
  EXPECT_EQ(answer(), "ro");
  EXPECT_EQ(watch.reads(), 2u);
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

}  // namespace
}  // namespace ktmfs::fs::testing

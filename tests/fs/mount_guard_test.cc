// What keeps two daemons, or two sources of one mount, off the same files: overlap detection of
// sources (by directory identity) and the state and backing directory locks.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/mount/layout.h"
#include "fs/mount/options.h"
#include "fs/mount/source_overlap.h"
#include "fs/mount/state_lock.h"
#include "mount_harness.h"

namespace ktmfs::fs {
namespace {

using testing::TempDir;

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::vector<Source> Named(std::vector<std::string> paths) {
  std::vector<Source> out;
  for (size_t i = 0; i < paths.size(); i++)
    out.push_back(Source{std::string(1, static_cast<char>('a' + i)), paths[i]});
  return out;
}

TEST(SourceOverlapTest, ChainsDecideWithoutPaths) {
  // Paths do not matter, only the identities: "/p" and "/q" below are one directory.
  const DirId root{1, 2}, x{1, 10}, sub{1, 11}, other{2, 10};
  auto sources = Named({"/p", "/q"});
  EXPECT_TRUE(CheckDisjoint(sources, {{x, root}, {other, root}}).ok());
  EXPECT_TRUE(CheckDisjoint(sources, {{sub, root}, {x, root}}).ok());  // siblings
  Status same = CheckDisjoint(sources, {{x, root}, {x, root}});
  EXPECT_EQ(same.code(), EINVAL);
  EXPECT_EQ(same.message(),
            "source a (/p) and source b (/q) are the same directory; sources must not overlap");
  Status inside = CheckDisjoint(sources, {{x, root}, {sub, x, root}});
  EXPECT_EQ(inside.message(), "source b (/q) is inside source a (/p); sources must not overlap");
  Status outside = CheckDisjoint(sources, {{sub, x, root}, {x, root}});
  EXPECT_EQ(outside.message(), "source a (/p) is inside source b (/q); sources must not overlap");
  // The root contains everything.
  EXPECT_FALSE(CheckDisjoint(sources, {{root}, {x, root}}).ok());
}

TEST(SourceOverlapTest, AncestorChainEndsAtTheRoot) {
  TempDir t;
  std::string d = t.MakeDir("x");
  auto chain = AncestorChain(d);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  struct stat st, root;
  ASSERT_EQ(stat(d.c_str(), &st), 0);
  ASSERT_EQ(stat("/", &root), 0);
  ASSERT_GE(chain->size(), 3u);
  EXPECT_EQ(chain->front(), (DirId{st.st_dev, st.st_ino}));
  EXPECT_EQ(chain->back(), (DirId{root.st_dev, root.st_ino}));
  EXPECT_FALSE(AncestorChain(t.Sub("missing")).ok());
}

TEST(SourceOverlapTest, LayoutRefusesOverlapsBeforeCreatingAnything) {
  TempDir t;
  std::string x = t.MakeDir("x");
  t.MakeDir("x/sub");
  ASSERT_EQ(symlink("x", t.Sub("link").c_str()), 0);
  for (const std::string& spec :
       {"a=" + x + ":b=" + x + "/sub", "a=" + x + "/sub:b=" + x, "a=" + x + ":b=" + x,
        "a=" + x + ":b=" + t.Sub("link/sub"), "a=" + t.Sub("link") + ":b=" + x}) {
    Options o;
    o.source = spec;
    auto l = Layout::Create(o);
    ASSERT_FALSE(l.ok()) << spec;
    EXPECT_NE(l.status().message().find("sources must not overlap"), std::string::npos)
        << l.status().message();
    EXPECT_NE(l.status().message().find("source a (" + x), std::string::npos)
        << l.status().message();
    EXPECT_FALSE(Exists(x + "/.ktmfs")) << spec;
    EXPECT_FALSE(Exists(x + "/sub/.ktmfs")) << spec;
  }
  Options siblings;
  siblings.source = "a=" + t.MakeDir("ab") + ":b=" + t.MakeDir("a");
  EXPECT_TRUE(Layout::Create(siblings).ok());
}

TEST(LayoutStateDirsTest, DedicatedLogsAddEachSourcesStateDirOnce) {
  TempDir t;
  Options o;
  o.source = "a=" + t.MakeDir("one") + ":b=" + t.MakeDir("two");
  o.log_mode = LogMode::kDedicated;
  auto l = Layout::Create(o);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->state_dirs(), (std::vector<std::string>{t.Sub("one/.ktmfs"), t.Sub("two/.ktmfs")}));
  o.state_dir = t.Sub("state");
  l = Layout::Create(o);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->state_dirs(),
            (std::vector<std::string>{t.Sub("state"), t.Sub("one/.ktmfs"), t.Sub("two/.ktmfs")}));
  o.log_mode = LogMode::kMultiplexed;
  l = Layout::Create(o);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->state_dirs(), (std::vector<std::string>{t.Sub("state")}));
}

TEST(StateLockTest, OneHolderNamedByPid) {
  TempDir t;
  std::string dir = t.MakeDir("state");
  EXPECT_FALSE(StateDirLockHolder(dir).has_value());  // no lock file yet
  {
    auto first = DirLock::LockStateDir(dir);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    ASSERT_EQ(StateDirLockHolder(dir), getpid());
    // OFD locks conflict between two opens even in one process: as two daemons would.
    auto second = DirLock::LockStateDir(dir);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), EBUSY);
    EXPECT_EQ(second.status().message(), "state directory " + dir +
                                             " is in use by another ktmfs daemon (" + dir +
                                             "/lock held by pid " + std::to_string(getpid()) + ")");
  }
  EXPECT_FALSE(StateDirLockHolder(dir).has_value());
  EXPECT_TRUE(DirLock::LockStateDir(dir).ok());
}

TEST(StateLockTest, LockFileIsNotFollowedThroughASymlink) {
  TempDir t;
  std::string dir = t.MakeDir("state");
  ASSERT_EQ(symlink(t.Sub("elsewhere").c_str(), (dir + "/lock").c_str()), 0);
  auto l = DirLock::LockStateDir(dir);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find(dir + "/lock"), std::string::npos);
  EXPECT_FALSE(Exists(t.Sub("elsewhere")));
}

TEST(StateLockTest, SourceLockNamesItsHolder) {
  TempDir t;
  std::string src = t.MakeDir("src");
  auto first = DirLock::LockSource(src);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = DirLock::LockSource(src);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), EBUSY);
  EXPECT_EQ(second.status().message(), "source " + src +
                                           " is served by another ktmfs daemon (its lock is "
                                           "held by pid " +
                                           std::to_string(getpid()) + ")");
  *first = DirLock();
  EXPECT_TRUE(DirLock::LockSource(src).ok());
}

TEST(StateLockTest, LockMountReleasesWhatItTookOnFailure) {
  TempDir t;
  std::string state = t.MakeDir("state"), a = t.MakeDir("a"), b = t.MakeDir("b");
  auto held = DirLock::LockSource(b);
  ASSERT_TRUE(held.ok());
  auto all = LockMount({state}, {a, b});
  ASSERT_FALSE(all.ok());
  EXPECT_NE(all.status().message().find("source " + b), std::string::npos);
  EXPECT_FALSE(StateDirLockHolder(state).has_value());
  EXPECT_TRUE(DirLock::LockSource(a).ok());
}

}  // namespace
}  // namespace ktmfs::fs

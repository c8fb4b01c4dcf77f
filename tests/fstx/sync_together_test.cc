#include "fs/tx/sync_together.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

// A commit may change more files than the daemon may have open at once: they are synced a few
// at a time. Before, every one was opened first, and 20,000 files of one commit failed with
// EMFILE; the RM then refused changes until the next mount.
TEST(SyncTogether, SyncsMoreFilesThanMayBeOpenAtOnce) {
  TempDir tmp;
  AppliedChanges changes;
  changes.backing_root = tmp.path();
  constexpr int kFiles = 600;
  for (int i = 0; i < kFiles; i++) {
    const std::string f = tmp.path() + "/f" + std::to_string(i);
    WriteFile(f, "x");
    changes.files.push_back(f);
  }
  changes.dirs.push_back(tmp.path());
  for (bool ring : {true, false}) {
    SCOPED_TRACE(ring ? "through io_uring" : "one after another");
    SyncTogether together(ring);
    rlimit saved;
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    rlimit low = saved;
    low.rlim_cur = OpenDescriptors() + 200;  // room for a few hundred, not for 600
    ASSERT_LT(low.rlim_cur, saved.rlim_cur);
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    Status s = together.Sync({&changes});
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
}

// What apply changed may be replaced behind the daemon's back before the sync: a FIFO at a
// file's name was opened, and the open waited for a writer for ever; a file gone failed the
// sync, and the RM refused changes until the next mount. Each is left out, its filesystem
// synced instead.
TEST(SyncTogether, FilesReplacedOrGoneSinceAreNotOpened) {
  TempDir tmp;
  AppliedChanges changes;
  changes.backing_root = tmp.path();
  const std::string fifo = tmp.path() + "/fifo", gone = tmp.path() + "/gone",
                    kept = tmp.path() + "/kept";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  WriteFile(kept, "x");
  changes.files = {fifo, gone, kept};
  changes.dirs.push_back(tmp.path());
  for (bool ring : {true, false}) {
    SCOPED_TRACE(ring ? "through io_uring" : "one after another");
    SyncTogether together(ring);
    Status s = together.Sync({&changes});
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
}

}  // namespace
}  // namespace ktmfs::fstx

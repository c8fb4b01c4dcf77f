// Many threads through one mount at once: the inode table's lookup counting and the daemon's
// per-thread caller identity must hold up (the sanitized build checks for races on memory).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "compare_fixture.h"

namespace ktmfs::fs::testing {
namespace {

using ConcurrencyTest = MountedTest;

TEST_F(ConcurrencyTest, ParallelCreateRenameLinkUnlink) {
  constexpr int kThreads = 6, kRounds = 150;
  ASSERT_EQ(mkdir((mnt_ + "/shared").c_str(), 0755), 0);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::string own = mnt_ + "/t" + std::to_string(t);
      if (mkdir(own.c_str(), 0755) != 0) failures++;
      for (int i = 0; i < kRounds; i++) {
        std::string a = own + "/a" + std::to_string(i), b = own + "/b" + std::to_string(i);
        std::string s = mnt_ + "/shared/l" + std::to_string(t) + "-" + std::to_string(i);
        if (!WriteFile(a, "round " + std::to_string(i))) failures++;
        if (rename(a.c_str(), b.c_str()) != 0) failures++;
        if (link(b.c_str(), s.c_str()) != 0) failures++;
        struct stat st1, st2;
        if (stat(b.c_str(), &st1) != 0 || stat(s.c_str(), &st2) != 0 || st1.st_ino != st2.st_ino ||
            st1.st_nlink != 2) {
          failures++;
        }
        if (i % 2 == 0 && unlink(b.c_str()) != 0) failures++;
        if (i % 3 == 0 && unlink(s.c_str()) != 0) failures++;
        // Listing the shared directory while others change it (readdirplus counts lookups).
        if (i % 25 == 0) {
          DIR* d = opendir((mnt_ + "/shared").c_str());
          if (d == nullptr) {
            failures++;
          } else {
            while (readdir(d) != nullptr) {
            }
            closedir(d);
          }
        }
      }
    });
  }
  for (std::thread& th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 0);
  // Forget every node, then check what is left against the backing directory.
  ASSERT_TRUE(WriteFile("/proc/sys/vm/drop_caches", "2"));
  for (int t = 0; t < kThreads; t++) {
    for (int i = 0; i < kRounds; i++) {
      std::string rel = "/t" + std::to_string(t) + "/b" + std::to_string(i);
      struct stat m, b;
      bool in_mount = stat((mnt_ + rel).c_str(), &m) == 0;
      bool in_backing = stat((backing_ + rel).c_str(), &b) == 0;
      EXPECT_EQ(in_mount, i % 2 != 0) << rel;
      EXPECT_EQ(in_mount, in_backing) << rel;
      if (in_mount && in_backing) {
        EXPECT_EQ(m.st_ino, b.st_ino) << rel;
        EXPECT_EQ(ReadFile(mnt_ + rel), "round " + std::to_string(i));
      }
    }
  }
}

}  // namespace
}  // namespace ktmfs::fs::testing

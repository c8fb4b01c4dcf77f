// The transaction's operations called as the adapter calls them (fs/ops/adapter.h), without a
// mount: the caller is a value and the Reply each returns is what the kernel would be sent.
#include "fs/ops/tx_ops.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "ops_fixture.h"
#include "tx_test_util.h"

namespace ktmfs::fs {
namespace {

using TxOpsTest = OpsTest;

TEST_F(TxOpsTest, TheViewShowsWhatTheTransactionMadeAndNoOneElseSeesIt) {
  ASSERT_NO_FATAL_FAILURE(LogMkdir(*txs_, id_, "nd", 0750));
  Inode* root = fs_->inodes().root();
  {
    TxGuard tx = txs_->EnterById(id_);
    ASSERT_TRUE(tx);
    Reply found = txops::Lookup(*fs_, tx, root, "nd");
    ASSERT_EQ(found.error(), 0);
    Inode* nd = Node(found);
    ASSERT_NE(nd, nullptr);
    EXPECT_TRUE(S_ISDIR(found.entry()->attr.st_mode));
    Reply attr = txops::Getattr(*fs_, tx, nd);
    ASSERT_NE(attr.attr(), nullptr);
    EXPECT_EQ(attr.attr()->st_mode, S_IFDIR | 0750);
    EXPECT_EQ(txops::Lookup(*fs_, tx, root, "missing").error(), ENOENT);
  }
  // The committed view, as every other process gets it, has no such name.
  fuse_entry_param e;
  EXPECT_EQ(fs_->Lookup(root, "nd", &e), ENOENT);
  ForgetNodes();
}

TEST_F(TxOpsTest, CommittedObjectsReadThroughTheView) {
  Inode* root = fs_->inodes().root();
  TxGuard tx = txs_->EnterById(id_);
  ASSERT_TRUE(tx);
  Reply ln = txops::Lookup(*fs_, tx, root, "ln");
  ASSERT_EQ(ln.error(), 0);
  Reply target = txops::Readlink(*fs_, tx, Node(ln));
  ASSERT_NE(target.link(), nullptr);
  EXPECT_EQ(*target.link(), "target");

  Reply old = txops::Lookup(*fs_, tx, root, "old");
  ASSERT_EQ(old.error(), 0);
  Inode* node = Node(old);
  EXPECT_EQ(old.entry()->attr.st_size, 9);
  Reply value = txops::Getxattr(*fs_, tx, node, "user.k", 16);
  ASSERT_NE(value.bytes(), nullptr);
  EXPECT_EQ(std::string(value.bytes()->begin(), value.bytes()->end()), "v");
  EXPECT_EQ(txops::Getxattr(*fs_, tx, node, "user.k", 0).bytes(), nullptr);  // its size only
  EXPECT_EQ(txops::Getxattr(*fs_, tx, node, "user.none", 16).error(), ENODATA);
  Reply names = txops::Listxattr(*fs_, tx, node, 64);
  ASSERT_NE(names.bytes(), nullptr);
  EXPECT_EQ(std::string(names.bytes()->begin(), names.bytes()->end()), std::string("user.k\0", 7));
  EXPECT_EQ(txops::Listxattr(*fs_, tx, node, 3).error(), ERANGE);
  ForgetNodes();
}

TEST_F(TxOpsTest, ChangesAreTheTransactionsUntilItCommits) {
  const Caller root(0, 0, 0, {});
  Inode* top = fs_->inodes().root();
  {
    TxGuard tx = txs_->EnterById(id_);
    ASSERT_TRUE(tx);
    Reply made = txops::Make(root, *fs_, tx, top, "d", S_IFDIR | 0755, 0, nullptr);
    ASSERT_EQ(made.error(), 0);
    Inode* d = Node(made);
    ASSERT_EQ(txops::Make(root, *fs_, tx, d, "f", S_IFREG | 0640, 0, nullptr).error(), 0);
    EXPECT_EQ(txops::Make(root, *fs_, tx, d, "f", S_IFREG | 0640, 0, nullptr).error(), EEXIST);
    ASSERT_EQ(txops::Rename(root, *fs_, tx, d, "f", top, "g", 0).error(), 0);
    EXPECT_EQ(txops::Lookup(*fs_, tx, d, "f").error(), ENOENT);
    Reply g = txops::Lookup(*fs_, tx, top, "g");
    ASSERT_EQ(g.error(), 0);
    EXPECT_EQ(g.entry()->attr.st_mode, S_IFREG | 0640);
    Node(g);
    ASSERT_EQ(txops::Remove(root, *fs_, tx, top, "old", false).error(), 0);
    EXPECT_EQ(txops::Lookup(*fs_, tx, top, "old").error(), ENOENT);
    EXPECT_EQ(txops::Remove(root, *fs_, tx, top, "d", false).error(), EISDIR);
  }
  // Nothing of it is in the backing directory until the commit, and all of it after.
  struct stat st;
  EXPECT_NE(stat((backing_ + "/d").c_str(), &st), 0);
  EXPECT_EQ(stat((backing_ + "/old").c_str(), &st), 0);
  ForgetNodes();
  ASSERT_TRUE(txs_->Commit(Me(), id_).ok());
  EXPECT_TRUE(stat((backing_ + "/d").c_str(), &st) == 0 && S_ISDIR(st.st_mode));
  ASSERT_EQ(stat((backing_ + "/g").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0640);
  EXPECT_NE(stat((backing_ + "/old").c_str(), &st), 0);
}

TEST_F(TxOpsTest, TheViewShowsTheTransactionsTimesAndLinkCounts) {
  const Caller root(0, 0, 0, {});
  Inode* top = fs_->inodes().root();
  struct stat committed;
  ASSERT_EQ(stat((backing_ + "/old").c_str(), &committed), 0);
  const timespec past{1000, 0};
  const timespec times[2] = {past, past};
  ASSERT_EQ(utimensat(AT_FDCWD, (backing_ + "/old").c_str(), times, 0), 0);
  ASSERT_EQ(utimensat(AT_FDCWD, backing_.c_str(), times, 0), 0);
  {
    TxGuard tx = txs_->EnterById(id_);
    ASSERT_TRUE(tx);
    Reply old = txops::Lookup(*fs_, tx, top, "old");
    ASSERT_EQ(old.error(), 0);
    Inode* f = Node(old);
    const timespec ctime_before = old.entry()->attr.st_ctim;
    // chown(f, -1, -1) as the transaction's first change: nothing is logged, and still the view
    // shows a new ctime.
    struct stat none {};
    Reply chowned = txops::Setattr(root, *fs_, tx, f, &none, 0);
    ASSERT_NE(chowned.attr(), nullptr) << chowned.error();
    // Later than the kernel's coarse clock stamped the file before.
    EXPECT_TRUE(chowned.attr()->st_ctim.tv_sec > ctime_before.tv_sec ||
                (chowned.attr()->st_ctim.tv_sec == ctime_before.tv_sec &&
                 chowned.attr()->st_ctim.tv_nsec > ctime_before.tv_nsec));
    EXPECT_EQ(chowned.attr()->st_mtim.tv_sec, past.tv_sec);  // a status change only

    // A second name: the file's link count goes up, the directory's mtime moves.
    Reply linked = txops::Link(root, *fs_, tx, f, top, "second");
    ASSERT_EQ(linked.error(), 0);
    Node(linked);
    EXPECT_EQ(linked.entry()->attr.st_nlink, 2u);
    Reply dir = txops::Getattr(*fs_, tx, top);
    ASSERT_NE(dir.attr(), nullptr);
    EXPECT_GT(dir.attr()->st_mtim.tv_sec, past.tv_sec);
    // A directory made under the root adds a link to it; removing a name takes one away.
    const nlink_t dir_links = dir.attr()->st_nlink;
    Reply made = txops::Make(root, *fs_, tx, top, "sub", S_IFDIR | 0755, 0, nullptr);
    ASSERT_EQ(made.error(), 0);
    Node(made);
    EXPECT_EQ(txops::Getattr(*fs_, tx, top).attr()->st_nlink, dir_links + 1);
    ASSERT_EQ(txops::Remove(root, *fs_, tx, top, "second", false).error(), 0);
    EXPECT_EQ(txops::Getattr(*fs_, tx, f).attr()->st_nlink, 1u);
  }
  // None of it is the committed view's.
  struct stat st;
  ASSERT_EQ(stat((backing_ + "/old").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_mtim.tv_sec, past.tv_sec);
  ForgetNodes();
}

TEST_F(TxOpsTest, AViewOnlyChangeEndsWithItsTransaction) {
  const Caller root(0, 0, 0, {});
  Inode* top = fs_->inodes().root();
  {
    TxGuard tx = txs_->EnterById(id_);
    ASSERT_TRUE(tx);
    Reply old = txops::Lookup(*fs_, tx, top, "old");
    ASSERT_EQ(old.error(), 0);
    struct stat none {};
    ASSERT_EQ(txops::Setattr(root, *fs_, tx, Node(old), &none, 0).error(), 0);  // chown(-1, -1)
    EXPECT_NE(txs_->rm(0).Overlay(id_), nullptr);
  }
  ForgetNodes();
  ASSERT_TRUE(txs_->Commit(Me(), id_).ok());
  EXPECT_EQ(txs_->rm(0).Overlay(id_), nullptr);  // the end dropped the view
}

class TxOpsCappedTest : public OpsTest {
  void Configure(Options& options) override { options.user_caps.memory = 4096; }
};

TEST_F(TxOpsCappedTest, ViewOnlyStampsCountAgainstTheOwnersMemory) {
  // chown(f, -1, -1) needs no permission: a user's transaction could otherwise stamp every file
  // it can see, each an entry in the daemon's memory.
  for (int i = 0; i < 200; i++)
    std::ofstream(backing_ + "/f" + std::to_string(i)) << "x";
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the transaction is another user's";
  // The transaction must be bound to a process of its owner's: a child as uid 1000, waiting.
  int ready[2], release[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(release, O_CLOEXEC), 0);
  const pid_t parent = getpid();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    close(release[1]);
    char c = 0;
    if (setgid(1000) != 0 || setuid(1000) != 0) _exit(1);
    // After the ids change, which clears it; and the parent may be gone already.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (write(ready[1], &c, 1) != 1) _exit(1);
    (void)!read(release[0], &c, 1);
    _exit(0);
  }
  // Each side keeps only its ends: a child that cannot become uid 1000 ends the wait below.
  close(ready[1]);
  close(release[0]);
  // Let go and reaped in every path, an assertion's early return included.
  struct Reap {
    pid_t pid;
    int ready, release;
    ~Reap() {
      close(release);  // the child's read returns
      waitpid(pid, nullptr, 0);
      close(ready);
    }
  } reap{child, ready[0], release[1]};
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the child could not become uid 1000";
  const CallerContext owner{1000, 1000, child};
  const Caller user(1000, 1000, child, {1000});
  auto id = txs_->Begin(owner, Scope::kProcess, child, 0, "stamps");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  Inode* top = fs_->inodes().root();
  int stamped = 0, refused = 0;
  {
    TxGuard tx = txs_->EnterById(*id);
    ASSERT_TRUE(tx);
    for (int i = 0; i < 200; i++) {
      Reply f = txops::Lookup(*fs_, tx, top, ("f" + std::to_string(i)).c_str());
      ASSERT_EQ(f.error(), 0);
      struct stat none {};
      const int err = txops::Setattr(user, *fs_, tx, Node(f), &none, 0).error();
      if (err == 0) {
        stamped++;
      } else {
        EXPECT_EQ(err, ENOSPC);
        refused++;
      }
    }
  }
  EXPECT_GT(stamped, 0);
  EXPECT_GT(refused, 0);
  EXPECT_LE(stamped * fstx::TxOverlay::kStampBytes, 4096u);
  ForgetNodes();
  EXPECT_TRUE(txs_->Rollback(owner, *id).ok());
}

TEST_F(TxOpsTest, TheCallersPermissionIsCheckedBeforeAnyLock) {
  ASSERT_EQ(chmod(backing_.c_str(), 0755), 0);
  const Caller user(1000, 1000, 0, {1000});
  Inode* top = fs_->inodes().root();
  TxGuard tx = txs_->EnterById(id_);
  ASSERT_TRUE(tx);
  // The root directory is root's and 0755: no one else may add, remove or rename in it.
  EXPECT_EQ(txops::Make(user, *fs_, tx, top, "x", S_IFREG | 0644, 0, nullptr).error(), EACCES);
  EXPECT_EQ(txops::Remove(user, *fs_, tx, top, "old", false).error(), EACCES);
  EXPECT_EQ(txops::Rename(user, *fs_, tx, top, "old", top, "new", 0).error(), EACCES);
  struct stat chmod_to {};
  chmod_to.st_mode = 0600;
  Reply old = txops::Lookup(*fs_, tx, top, "old");
  ASSERT_EQ(old.error(), 0);
  EXPECT_EQ(txops::Setattr(user, *fs_, tx, Node(old), &chmod_to, FUSE_SET_ATTR_MODE).error(),
            EPERM);  // not the owner
  ForgetNodes();
}

}  // namespace
}  // namespace ktmfs::fs

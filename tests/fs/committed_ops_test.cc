// The committed view's operations called as the adapter calls them (fs/ops/adapter.h), without
// a mount: they act on the backing directory as the caller, and refuse what a live transaction
// holds.
#include "fs/ops/committed_ops.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "fs/ops/tx_ops.h"
#include "ops_fixture.h"

namespace ktmfs::fs {
namespace {

using CommittedOpsTest = OpsTest;

TEST_F(CommittedOpsTest, NamesAreMadeReadAndRemovedInTheBackingDirectory) {
  const Caller root(0, 0, 0, {}, 022);
  Inode* top = fs_->inodes().root();
  Reply dir = committed::Make(root, *fs_, top, "d", S_IFDIR | 0777, 0, nullptr);
  ASSERT_EQ(dir.error(), 0);
  Inode* d = Node(dir);
  EXPECT_EQ(dir.entry()->attr.st_mode, S_IFDIR | 0755);  // the caller's umask
  Reply ln = committed::Make(root, *fs_, d, "ln", S_IFLNK | 0777, 0, "../old");
  ASSERT_EQ(ln.error(), 0);
  Reply target = committed::Readlink(Node(ln));
  ASSERT_NE(target.link(), nullptr);
  EXPECT_EQ(*target.link(), "../old");
  Reply fifo = committed::Make(root, *fs_, d, "fifo", S_IFIFO | 0640, 0, nullptr);
  ASSERT_EQ(fifo.error(), 0);
  Node(fifo);
  EXPECT_EQ(fifo.entry()->attr.st_mode, S_IFIFO | 0640);
  EXPECT_EQ(committed::Make(root, *fs_, d, "fifo", S_IFIFO | 0640, 0, nullptr).error(), EEXIST);

  Reply found = committed::Lookup(root, *fs_, top, "old");
  ASSERT_EQ(found.error(), 0);
  Inode* old = Node(found);
  Reply attr = committed::Getattr(*fs_, old, nullptr);
  ASSERT_NE(attr.attr(), nullptr);
  EXPECT_EQ(attr.attr()->st_size, 9);
  Reply linked = committed::Link(root, *fs_, old, d, "second");
  ASSERT_EQ(linked.error(), 0);
  Node(linked);
  EXPECT_EQ(linked.entry()->attr.st_nlink, 2u);
  ASSERT_EQ(committed::Rename(root, *fs_, d, "second", top, "third", 0).error(), 0);
  EXPECT_EQ(committed::Rename(root, *fs_, top, "third", top, "old", RENAME_NOREPLACE).error(),
            EEXIST);
  EXPECT_EQ(committed::Rename(root, *fs_, top, "third", top, "x", RENAME_WHITEOUT).error(), EINVAL);
  ASSERT_EQ(committed::Remove(root, *fs_, top, "third", false).error(), 0);
  EXPECT_EQ(committed::Remove(root, *fs_, top, "d", false).error(), EISDIR);
  EXPECT_EQ(committed::Remove(root, *fs_, top, "d", true).error(), ENOTEMPTY);

  struct stat st;
  EXPECT_EQ(lstat((backing_ + "/d/ln").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_NE(lstat((backing_ + "/third").c_str(), &st), 0);
  ForgetNodes();
}

TEST_F(CommittedOpsTest, TheBackingFilesystemChecksAsTheCaller) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the daemon takes on the caller's identity";
  IdentityScope::InitProcessIdentity();  // as the daemon's main does
  ASSERT_EQ(chmod(backing_.c_str(), 0755), 0);
  ASSERT_EQ(chmod((backing_ + "/old").c_str(), 0644), 0);
  const Caller user(1000, 1000, 0, {1000}, 077);
  Inode* top = fs_->inodes().root();
  // The root directory is root's and 0755: no one else may add, remove or rename in it. Nor
  // may anyone else set a user xattr of root's 0644 file.
  EXPECT_EQ(committed::Make(user, *fs_, top, "x", S_IFREG | 0644, 0, nullptr).error(), EACCES);
  EXPECT_EQ(committed::Remove(user, *fs_, top, "old", false).error(), EACCES);
  EXPECT_EQ(committed::Rename(user, *fs_, top, "old", top, "new", 0).error(), EACCES);
  Reply old = committed::Lookup(user, *fs_, top, "old");
  ASSERT_EQ(old.error(), 0);
  EXPECT_EQ(committed::Setxattr(user, *fs_, Node(old), "user.k", "w", 1, 0).error(), EACCES);

  // In a directory of its own, what it makes is its own, with its umask.
  const std::string own = backing_ + "/own";
  ASSERT_EQ(mkdir(own.c_str(), 0755), 0);
  ASSERT_EQ(chown(own.c_str(), 1000, 1000), 0);
  Reply found = committed::Lookup(user, *fs_, top, "own");
  ASSERT_EQ(found.error(), 0);
  Inode* d = Node(found);
  Reply made = committed::Make(user, *fs_, d, "mine", S_IFREG | 0666, 0, nullptr);
  ASSERT_EQ(made.error(), 0);
  Node(made);
  struct stat st;
  ASSERT_EQ(stat((own + "/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  EXPECT_EQ(st.st_mode, S_IFREG | 0600);
  // The thread is the daemon again: root's change succeeds.
  EXPECT_EQ(committed::Remove(Caller(0, 0, 0, {}), *fs_, d, "mine", false).error(), 0);
  ForgetNodes();
}

TEST_F(CommittedOpsTest, WhatALiveTransactionHoldsIsRefused) {
  const Caller root(0, 0, 0, {});
  Inode* top = fs_->inodes().root();
  Reply old = committed::Lookup(root, *fs_, top, "old");
  ASSERT_EQ(old.error(), 0);
  Inode* f = Node(old);
  {
    // The transaction renames "old": it holds the file and both names.
    TxGuard tx = txs_->EnterById(id_);
    ASSERT_TRUE(tx);
    ASSERT_EQ(txops::Rename(root, *fs_, tx, top, "old", top, "moved", 0).error(), 0);
  }
  EXPECT_EQ(committed::Remove(root, *fs_, top, "old", false).error(), EBUSY);
  EXPECT_EQ(committed::Make(root, *fs_, top, "moved", S_IFREG | 0644, 0, nullptr).error(), EBUSY);
  EXPECT_EQ(committed::Link(root, *fs_, f, top, "again").error(), EBUSY);
  EXPECT_EQ(committed::Setxattr(root, *fs_, f, "user.k", "w", 1, 0).error(), EBUSY);
  // Reading is not changing: the committed view still shows the file under its old name.
  EXPECT_EQ(committed::Getxattr(root, *fs_, f, "user.k", 16).error(), 0);
  EXPECT_EQ(committed::Lookup(root, *fs_, top, "moved").error(), ENOENT);

  ASSERT_TRUE(txs_->Rollback(Me(), id_).ok());
  EXPECT_EQ(committed::Setxattr(root, *fs_, f, "user.k", "w", 1, 0).error(), 0);
  char value[4] = {};
  EXPECT_EQ(getxattr((backing_ + "/old").c_str(), "user.k", value, sizeof value), 1);
  EXPECT_EQ(value[0], 'w');
  ForgetNodes();
}

}  // namespace
}  // namespace ktmfs::fs

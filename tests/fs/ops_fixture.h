// A Filesystem and a TxService over one backing directory, with no mount, and one live
// transaction: what tests of the operations (fs/ops/committed_ops.h, tx_ops.h) call them on.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "fs/mount/layout.h"
#include "fs/mount/options.h"
#include "fs/ops/filesystem.h"
#include "fs/service/tx_service.h"
#include "mount_harness.h"

namespace ktmfs::fs {

using testing::TempDir;

// The backing directory holds "old" (a file with "committed" and user.k=v) and "ln" (a symlink
// to "target"); the transaction, id_, is bound to nothing and rolled back at the end.
class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A create as a Caller leaves the thread's umask at 0, as the daemon runs (IdentityScope).
    umask_ = umask(022);
    umask(umask_);
    backing_ = dir_.MakeDir("backing");
    std::ofstream(backing_ + "/old") << "committed";
    ASSERT_EQ(symlink("target", (backing_ + "/ln").c_str()), 0);
    ASSERT_EQ(setxattr((backing_ + "/old").c_str(), "user.k", "v", 1, 0), 0);
    options_.source = backing_;
    options_.mountpoint = dir_.MakeDir("mnt");
    Configure(options_);
    auto layout = Layout::Create(options_);
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    fs_ = std::make_unique<Filesystem>(options_, std::move(*layout));
    ASSERT_TRUE(fs_->OpenRoots().ok());
    auto txs = TxService::Start(options_, fs_->layout());
    ASSERT_TRUE(txs.ok()) << txs.status().ToString();
    txs_ = std::move(*txs);
    fs_->SetTxService(txs_.get());
    auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "ops");
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    id_ = *id;
  }
  void TearDown() override {
    const bool live = txs_ != nullptr && txs_->EnterById(id_);
    if (live) {
      EXPECT_TRUE(txs_->Rollback(Me(), id_).ok());
    }
    fs_->SetTxService(nullptr);
    umask(umask_);
  }
  // A test's own options, before anything starts.
  virtual void Configure(Options& /*options*/) {}
  static CallerContext Me() { return CallerContext{0, 0, static_cast<pid_t>(syscall(SYS_gettid))}; }
  // A node the kernel would hold after `reply`, given back at the end of the test.
  Inode* Node(const Reply& reply) {
    EXPECT_NE(reply.entry(), nullptr);
    if (reply.entry() == nullptr) return nullptr;
    looked_up_.push_back(reply.entry()->ino);
    return fs_->Get(reply.entry()->ino);
  }
  void ForgetNodes() {
    for (fuse_ino_t ino : looked_up_)
      fs_->inodes().Forget(fs_->Get(ino), 1);
    looked_up_.clear();
  }

  TempDir dir_;
  std::string backing_;
  Options options_;
  std::unique_ptr<Filesystem> fs_;
  std::unique_ptr<TxService> txs_;
  Guid id_;
  std::vector<fuse_ino_t> looked_up_;
  mode_t umask_ = 022;
};

}  // namespace ktmfs::fs

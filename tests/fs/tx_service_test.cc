// The daemon's transaction service without a mount: begin, commit and rollback with their
// permission rules, attribution of the calling thread, the reaper (exit of the bound process,
// timeout), recovery at start-up, and rollback of what is live when the service stops.
#include "fs/service/tx_service.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "fs/mount/layout.h"
#include "fs/mount/options.h"
#include "fs/tx/apply_plan.h"
#include "log/io.h"
#include "log/log.h"
#include "mount_harness.h"
#include "src/tm_records.h"
#include "tx_test_util.h"

namespace ktmfs::fs {
namespace {

using testing::TempDir;

pid_t Tid() {
  return static_cast<pid_t>(syscall(SYS_gettid));
}

std::string Read(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class TxServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backing_ = dir_.MakeDir("backing");
    Start();
  }
  void Start() {
    options_.source = backing_;
    options_.mountpoint = dir_.MakeDir("mnt");
    auto layout = Layout::Create(options_);
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    layout_ = std::make_unique<Layout>(std::move(*layout));
    auto s = TxService::Start(options_, *layout_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    txs_ = std::move(*s);
  }
  CallerContext Me(uid_t uid = 0) const { return CallerContext{uid, 0, Tid()}; }
  // Waits (bounded) for the reaper to end every transaction.
  bool WaitUntilNoneLive() {
    for (int i = 0; i < 200; i++) {
      if (txs_->List().empty()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  TempDir dir_;
  std::string backing_;
  Options options_;
  std::unique_ptr<Layout> layout_;
  std::unique_ptr<TxService> txs_;
};

TEST_F(TxServiceTest, BeginBindsTheCallerAndCommitEndsIt) {
  EXPECT_FALSE(txs_->Enter(Tid()));
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "first");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  {
    TxGuard g = txs_->Enter(Tid());
    ASSERT_TRUE(g);
    EXPECT_EQ(g.id(), *id);
  }
  EXPECT_EQ(txs_->Current(Tid()), std::optional<Guid>(*id));
  auto list = txs_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "first");
  EXPECT_EQ(list[0].pid, Tid());
  // A second begin for a bound thread is a conflict.
  EXPECT_EQ(txs_->Begin(Me(), Scope::kThread, 0, 0, "").status().code(), EBUSY);
  ASSERT_TRUE(txs_->Commit(Me(), Guid{}).ok());
  EXPECT_FALSE(txs_->Enter(Tid()));
  EXPECT_TRUE(txs_->List().empty());
  // Nothing bound any more.
  EXPECT_EQ(txs_->Commit(Me(), Guid{}).code(), ENODATA);
  EXPECT_EQ(txs_->Rollback(Me(), *id).code(), ENOENT);
}

TEST_F(TxServiceTest, OnlyTheOwnerOrRootEndsATransaction) {
  // This thread belongs to root: another user cannot bind it.
  EXPECT_EQ(txs_->Begin(Me(1000), Scope::kThread, 0, 0, "").status().code(), EPERM);
  auto id = txs_->Begin(Me(0), Scope::kThread, 0, 0, "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(txs_->Commit(Me(1001), *id).code(), EPERM);
  EXPECT_EQ(txs_->Rollback(Me(1001), *id).code(), EPERM);
  EXPECT_TRUE(txs_->Enter(Tid()));  // still live
  EXPECT_TRUE(txs_->Rollback(Me(0), *id).ok());
  EXPECT_FALSE(txs_->Enter(Tid()));
}

TEST_F(TxServiceTest, AnOperationInFlightDelaysTheEnd) {
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "");
  ASSERT_TRUE(id.ok());
  TxGuard g = txs_->Enter(Tid());
  ASSERT_TRUE(g);
  std::atomic<bool> ended{false};
  std::thread t([&] {
    EXPECT_TRUE(txs_->Rollback(Me(), *id).ok());
    ended = true;
  });
  // The rollback cannot finish while the guard lives; give it every chance to (wrongly) do so.
  for (int i = 0; i < 20 && !ended; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(ended);
  g = TxGuard();
  t.join();
  EXPECT_TRUE(ended);
}

TEST_F(TxServiceTest, TheReaperRollsBackWhenTheBoundProcessExits) {
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  auto id = txs_->Begin(Me(), Scope::kProcess, child, 0, "");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(txs_->List().size(), 1u);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(WaitUntilNoneLive());
}

TEST_F(TxServiceTest, TheReaperRollsBackWhenTheTimeoutExpires) {
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 1, "");
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(WaitUntilNoneLive());
  EXPECT_FALSE(txs_->Enter(Tid()));
}

TEST_F(TxServiceTest, ChangesReachTheBackingDirectoryOnlyOnCommit) {
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "");
  ASSERT_TRUE(id.ok());
  auto& rm = txs_->rm(0);
  auto staging = rm.Staging(*id);
  ASSERT_TRUE(staging.ok()) << staging.status().ToString();
  auto n = rm.NewObjectNumber(*id);
  ASSERT_TRUE(n.ok());
  auto f = (*staging)->NewFile(fstx::StagedNameForNew(*n));
  ASSERT_TRUE(f.ok());
  const char data[] = "hello";
  ASSERT_TRUE((*f)->Write(0, std::as_bytes(std::span(data, 5))).ok());
  fstx::Op op;
  op.kind = fstx::OpKind::kCreate;
  op.object = fstx::ObjectId::New(*n);
  op.path = "greeting";
  op.mode = S_IFREG | 0644;
  op.staged_file = fstx::StagedNameForNew(*n);
  ASSERT_TRUE(rm.LogOp(*id, op).ok());
  EXPECT_NE(access((backing_ + "/greeting").c_str(), F_OK), 0);
  ASSERT_NE(rm.Overlay(*id), nullptr);
  EXPECT_EQ(rm.Overlay(*id)->Lookup("", "greeting")->kind, fstx::OverlayLookup::Kind::kEntry);
  ASSERT_TRUE(txs_->Commit(Me(), *id).ok());
  EXPECT_EQ(Read(backing_ + "/greeting"), "hello");
}

TEST_F(TxServiceTest, StoppingRollsBackAndRestartRecovers) {
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "");
  ASSERT_TRUE(id.ok());
  ASSERT_NO_FATAL_FAILURE(LogMkdir(*txs_, *id, "d", 0755));
  txs_.reset();  // unmount: rolled back
  EXPECT_NE(access((backing_ + "/d").c_str(), F_OK), 0);
  auto s = TxService::Start(options_, *layout_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  txs_ = std::move(*s);
  EXPECT_TRUE(txs_->List().empty());
  EXPECT_NE(access((backing_ + "/d").c_str(), F_OK), 0);
}

// The transaction manager appends END records without waiting for them (losing one costs only
// handing an outcome out again after a crash); a clean stop still leaves them in the log.
TEST_F(TxServiceTest, StoppingLeavesTheEndOfEveryTransactionInTheLog) {
  auto id = txs_->Begin(Me(), Scope::kThread, 0, 0, "");
  ASSERT_TRUE(id.ok());
  ASSERT_NO_FATAL_FAILURE(LogMkdir(*txs_, *id, "d", 0755));
  ASSERT_TRUE(txs_->Rollback(Me(), *id).ok());
  txs_.reset();

  auto storage = log::OpenUringStorage(layout_->state_dir() + "/log", {});
  ASSERT_TRUE(storage.ok()) << storage.status().ToString();
  log::LogOptions lo;
  lo.read_only = true;
  auto lg = log::Log::Open(storage->get(), lo, false);
  ASSERT_TRUE(lg.ok()) << lg.status().ToString();
  const std::vector<std::byte> end = tm::EncodeTxId(*id);
  bool found = false;
  auto cursor = (*lg)->ReadAll(0);
  log::Record r;
  while (true) {
    auto more = cursor->Next(&r);
    ASSERT_TRUE(more.ok()) << more.status().ToString();
    if (!*more) break;
    if (r.type == static_cast<uint16_t>(tm::TmRecordType::kEnd) && r.payload == end) found = true;
  }
  EXPECT_TRUE(found) << "no END record of " << id->ToString() << " after a clean stop";
}

}  // namespace
}  // namespace ktmfs::fs

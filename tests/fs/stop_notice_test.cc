// The stop signal's notice: what it says, and that the handler it found still runs.
#include "fs/daemon/stop_notice.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace ktmfs::fs {
namespace {

TxService::Info Tx(uint8_t n, tm::TxState state, bool apply_pending = false) {
  TxService::Info i{};
  i.id.bytes[15] = n;
  i.state = state;
  i.apply_pending = apply_pending;
  return i;
}

TEST(StopNotice, SaysWhatTheStopWaitsForAndWhatRollsBack) {
  const std::vector<TxService::Info> txs = {
      Tx(1, tm::TxState::kActive), Tx(2, tm::TxState::kCommitting), Tx(3, tm::TxState::kPreparing),
      Tx(4, tm::TxState::kActive), Tx(5, tm::TxState::kCommitted, /*apply_pending=*/true)};
  const std::string s = DescribeStop(SIGTERM, txs);
  EXPECT_EQ(s.rfind("SIGTERM: stopping once what is under way is answered, waiting for ", 0), 0u)
      << s;
  EXPECT_NE(s.find("the commit (applying) of transaction " + txs[1].id.ToString()),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("the commit (preparing) of transaction " + txs[2].id.ToString()),
            std::string::npos)
      << s;
  EXPECT_EQ(s.find(txs[4].id.ToString()), std::string::npos) << "a pending apply is not waited for";
  EXPECT_NE(s.find("; 2 live transactions roll back"), std::string::npos) << s;
}

TEST(StopNotice, NothingUnderWay) {
  EXPECT_EQ(DescribeStop(SIGINT, {}), "SIGINT: stopping");
  EXPECT_EQ(DescribeStop(SIGHUP, {Tx(1, tm::TxState::kActive)}),
            "SIGHUP: stopping: 1 live transaction rolls back");
}

std::atomic<int> g_found_ran{0};
void FoundHandler(int sig) {
  g_found_ran = sig;
}

TEST(StopNotice, TellsAndRunsTheHandlerItFoundThenPutsItBack) {
  struct sigaction found {
  }, before{};
  found.sa_handler = FoundHandler;
  sigemptyset(&found.sa_mask);
  ASSERT_EQ(sigaction(SIGHUP, &found, &before), 0);
  std::mutex mu;
  std::condition_variable cv;
  int said = 0;
  {
    StopNotice notice([&](int sig) {
      std::lock_guard l(mu);
      said = sig;
      cv.notify_all();
    });
    ASSERT_EQ(raise(SIGHUP), 0);
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(30), [&] { return said != 0; }));
    EXPECT_EQ(said, SIGHUP);
    EXPECT_EQ(g_found_ran.load(), SIGHUP);
  }
  struct sigaction now {};
  ASSERT_EQ(sigaction(SIGHUP, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, &FoundHandler);
  ASSERT_EQ(sigaction(SIGHUP, &before, nullptr), 0);
}

}  // namespace
}  // namespace ktmfs::fs

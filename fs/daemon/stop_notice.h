// What a stop signal waits for, said in the daemon's log. SIGINT, SIGTERM and SIGHUP end the
// request loop (libfuse's handlers), but the loop returns only once every request under way has
// been answered, a commit's included, which can take long (a big transaction's apply, a slow
// disk): without a word the daemon seems to ignore the signal.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "fs/service/tx_service.h"

namespace ktmfs::fs {

// The sentence logged when signal `sig` asks the daemon to stop while `txs` (TxService::List)
// are known: the ends the stop waits for, and what rolls back.
std::string DescribeStop(int sig, const std::vector<TxService::Info>& txs);

// While alive, a stop signal also wakes a thread of its own that calls `say` with the signal's
// number, after which the handler found (libfuse's, which ends the loop) runs as before.
// Construct after fuse_set_signal_handlers; destroyed, it puts those handlers back, so that
// fuse_remove_signal_handlers recognizes and removes them.
class StopNotice {
 public:
  explicit StopNotice(std::function<void(int)> say);
  ~StopNotice();
  StopNotice(const StopNotice&) = delete;
  StopNotice& operator=(const StopNotice&) = delete;

 private:
  std::function<void(int)> say_;
  std::thread thread_;
  bool installed_ = false;
};

}  // namespace ktmfs::fs

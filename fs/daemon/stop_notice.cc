#include "fs/daemon/stop_notice.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <array>
#include <cassert>

namespace ktmfs::fs {
namespace {

constexpr std::array<int, 3> kStopSignals = {SIGINT, SIGTERM, SIGHUP};

// One notice per process, as there is one set of signal handlers.
int g_pipe[2] = {-1, -1};
struct sigaction g_found[kStopSignals.size()];

void OnStopSignal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_pipe[1], &b, 1);
  for (size_t i = 0; i < kStopSignals.size(); i++) {
    if (kStopSignals[i] != sig) continue;
    void (*h)(int) = g_found[i].sa_handler;
    if (h != SIG_DFL && h != SIG_IGN && h != nullptr) h(sig);
  }
  errno = saved;
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

std::string DescribeStop(int sig, const std::vector<TxService::Info>& txs) {
  std::string ending;
  size_t ending_count = 0, live = 0;
  for (const auto& t : txs) {
    const char* what = nullptr;
    switch (t.state) {
      case tm::TxState::kActive:
        live++;
        break;
      case tm::TxState::kPreparing:
      case tm::TxState::kPrepared:
        what = "the commit (preparing) of ";
        break;
      case tm::TxState::kCommitting:
        what = "the commit (applying) of ";
        break;
      case tm::TxState::kRollingBack:
        what = "the rollback of ";
        break;
      case tm::TxState::kCommitted:
      case tm::TxState::kRolledBack:
        break;  // ended; a pending apply is retried at the next mount
    }
    if (what == nullptr || t.apply_pending) continue;
    ending +=
        (ending_count++ == 0 ? "" : ", ") + std::string(what) + "transaction " + t.id.ToString();
  }
  std::string s = SignalName(sig) + ": stopping";
  if (ending_count > 0) s += " once what is under way is answered, waiting for " + ending;
  if (live > 0)
    s += std::string(ending_count > 0 ? "; " : ": ") + std::to_string(live) +
         (live == 1 ? " live transaction rolls back" : " live transactions roll back");
  return s;
}

StopNotice::StopNotice(std::function<void(int)> say) : say_(std::move(say)) {
  assert(g_pipe[0] < 0 && "one StopNotice at a time");
  if (pipe2(g_pipe, O_CLOEXEC) != 0) return;
  // The handler must never block on a full pipe (a burst of signals).
  (void)fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
  for (size_t i = 0; i < kStopSignals.size(); i++) {
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(kStopSignals[i], &sa, &g_found[i]);
  }
  installed_ = true;
  thread_ = std::thread([this] {
    unsigned char b;
    for (;;) {
      const ssize_t n = read(g_pipe[0], &b, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n != 1 || b == 0) return;
      say_(b);
    }
  });
}

StopNotice::~StopNotice() {
  if (!installed_) {
    for (int& fd : g_pipe) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
    return;
  }
  for (size_t i = 0; i < kStopSignals.size(); i++)
    (void)sigaction(kStopSignals[i], &g_found[i], nullptr);
  const unsigned char quit = 0;
  // Blocking is fine here: the thread drains the pipe.
  (void)fcntl(g_pipe[1], F_SETFL, 0);
  (void)!write(g_pipe[1], &quit, 1);
  thread_.join();
  for (int& fd : g_pipe) {
    close(fd);
    fd = -1;
  }
}

}  // namespace ktmfs::fs

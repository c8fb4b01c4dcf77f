#include "tools/held_signals.h"

#include <cstring>

#include "tools/tool_common.h"

namespace ktmfs::tools {

namespace {
constexpr int kHeld[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP};
}  // namespace

HeldSignals::HeldSignals() {
  sigemptyset(&held_);
  for (int sig : kHeld)
    sigaddset(&held_, sig);
  holding_ = sigprocmask(SIG_BLOCK, &held_, &before_) == 0;
}

HeldSignals::~HeldSignals() {
  Release();
}

int HeldSignals::Arrived() const {
  sigset_t pending;
  if (!holding_ || sigpending(&pending) != 0) return 0;
  for (int sig : kHeld) {
    if (sigismember(&pending, sig) != 1 || sigismember(&before_, sig) == 1) continue;
    // Held, an ignored signal is kept pending all the same (it may be handled by the time it
    // is let go), and then dropped: it ends nothing (txrun ignores SIGINT; a script's
    // background job, or nohup, too).
    struct sigaction sa;
    if (sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler == SIG_IGN) continue;
    return sig;
  }
  return 0;
}

void HeldSignals::Release() {
  if (!holding_) return;
  holding_ = false;
  sigprocmask(SIG_SETMASK, &before_, nullptr);
}

void SayHeldSignal(HeldSignals& held, const std::string& path, const char* what,
                   const char* outcome) {
  if (const int sig = held.Arrived(); sig != 0) {
    Warn("%s: %s came during the %s, which goes on once asked: %s", path.c_str(),
         sigabbrev_np(sig) != nullptr ? (std::string("SIG") + sigabbrev_np(sig)).c_str()
                                      : "a signal",
         what, outcome != nullptr ? outcome : "its outcome is as said above");
  }
  held.Release();
}

}  // namespace ktmfs::tools

// The signals that would end a tool from a terminal or a supervisor (SIGINT, SIGQUIT, SIGTERM,
// SIGHUP), held while it waits for the end of a transaction. Once a commit or rollback is asked
// for, the daemon carries it out whatever becomes of the caller, so dying meanwhile would only
// leave its outcome unsaid: Ctrl-C during a slow txcommit, or `timeout 5 txcommit`, exited 130 or
// 124 without a word about a commit that went on and was applied.
#pragma once

#include <signal.h>

#include <string>

namespace ktmfs::tools {

class HeldSignals {
 public:
  // Holds them from now on (a signal the process ignores stays ignored).
  HeldSignals();
  // Lets a held one act, as Release does.
  ~HeldSignals();
  HeldSignals(const HeldSignals&) = delete;
  HeldSignals& operator=(const HeldSignals&) = delete;

  // The first of them that arrived while held, or 0.
  int Arrived() const;
  // Stops holding them: one that arrived ends the process now, as it would have (its default
  // action), after the caller has said the outcome.
  void Release();

 private:
  sigset_t held_{}, before_{};
  bool holding_ = false;
};

// After a transaction's end (`what`: "commit") asked on `path` has been reported: if one of the
// signals arrived meanwhile, says that it did, and that the end went on (`outcome`, or "as said
// above" when it is null), then lets it end the process.
void SayHeldSignal(HeldSignals& held, const std::string& path, const char* what,
                   const char* outcome);

}  // namespace ktmfs::tools

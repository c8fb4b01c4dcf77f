// HeldSignals: what txcommit, txrollback and txrun hold while a transaction ends.
#include "tools/held_signals.h"

#include <gtest/gtest.h>
#include <signal.h>

namespace ktmfs::tools {
namespace {

volatile sig_atomic_t caught = 0;
void Catch(int sig) {
  caught = sig;
}

// Installs Catch for `sig` for the test's length, so that a released signal ends nothing.
class Caught {
 public:
  explicit Caught(int sig) : sig_(sig) {
    struct sigaction sa = {};
    sa.sa_handler = Catch;
    sigaction(sig, &sa, &old_);
    caught = 0;
  }
  ~Caught() { sigaction(sig_, &old_, nullptr); }

 private:
  int sig_;
  struct sigaction old_ = {};
};

TEST(HeldSignals, ASignalWaitsUntilReleasedAndIsSaid) {
  for (int sig : {SIGINT, SIGQUIT, SIGTERM, SIGHUP}) {
    Caught c(sig);
    HeldSignals held;
    EXPECT_EQ(held.Arrived(), 0);
    ASSERT_EQ(raise(sig), 0);
    EXPECT_EQ(caught, 0) << "delivered while held: " << sig;
    EXPECT_EQ(held.Arrived(), sig);
    held.Release();
    EXPECT_EQ(caught, sig) << "not delivered once released";
    EXPECT_EQ(held.Arrived(), 0);
  }
}

TEST(HeldSignals, OthersAreNotHeld) {
  Caught c(SIGUSR1);
  HeldSignals held;
  ASSERT_EQ(raise(SIGUSR1), 0);
  EXPECT_EQ(caught, SIGUSR1);
  EXPECT_EQ(held.Arrived(), 0);
}

// An ignored signal is pending while held, and then dropped: it ended nothing, so is not said.
TEST(HeldSignals, AnIgnoredOneIsNotSaid) {
  struct sigaction ignore = {}, before = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGINT, &ignore, &before), 0);
  {
    HeldSignals held;
    ASSERT_EQ(raise(SIGINT), 0);
    EXPECT_EQ(held.Arrived(), 0);
  }
  sigset_t pending;
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGINT), 0);
  sigaction(SIGINT, &before, nullptr);
}

// One the process had blocked before stays blocked, and is not one that came meanwhile.
TEST(HeldSignals, WhatWasBlockedBeforeStaysBlocked) {
  Caught c(SIGTERM);
  sigset_t term, before;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ASSERT_EQ(sigprocmask(SIG_BLOCK, &term, &before), 0);
  {
    HeldSignals held;
    ASSERT_EQ(raise(SIGTERM), 0);
    EXPECT_EQ(held.Arrived(), 0);
  }
  EXPECT_EQ(caught, 0);
  ASSERT_EQ(sigprocmask(SIG_SETMASK, &before, nullptr), 0);
  EXPECT_EQ(caught, SIGTERM);
}

}  // namespace
}  // namespace ktmfs::tools

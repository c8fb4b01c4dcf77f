// A fixture with a live ktmfs mount over a fresh backing directory next to a plain directory on
// the same filesystem: each test runs one operation on both and compares results and errno.
#pragma once

#include <errno.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "mount_harness.h"

namespace ktmfs::fs::testing {

struct Outcome {
  long ret;
  int err;  // errno when ret < 0
  bool operator==(const Outcome&) const = default;
};

inline std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  os << "ret=" << o.ret;
  if (o.ret < 0) os << " errno=" << o.err << " (" << strerror(o.err) << ")";
  return os;
}

class MountedTest : public ::testing::Test {
 protected:
  // Mount options for this fixture; subclasses override.
  virtual std::vector<std::string> MountOptions() const { return {}; }
  // Runs before mounting, with backing_ and plain_ created.
  virtual void PrepareBacking() {}

  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    backing_ = tmp_.MakeDir("backing");
    plain_ = tmp_.MakeDir("plain");
    mnt_ = tmp_.MakeDir("mnt");
    PrepareBacking();
    std::string err = mount_.Start(backing_, mnt_, MountOptions());
    ASSERT_EQ(err, "");
  }

  void TearDown() override {
    if (mount_.running()) {
      EXPECT_EQ(mount_.Stop(), "");
    }
    EXPECT_EQ(ProcMountsLine(mnt_), "") << "still mounted";
  }

  // Runs f(root) on the plain directory and on the mount; returns both outcomes.
  template <typename F>
  std::pair<Outcome, Outcome> Run(F f) {
    return {Once(f, plain_), Once(f, mnt_)};
  }

  // Runs f(root) on both and expects the same outcome; returns the mount's.
  template <typename F>
  Outcome Same(F f) {
    auto [p, m] = Run(f);
    EXPECT_EQ(p, m) << "plain directory vs ktmfs";
    return m;
  }

  TempDir tmp_;
  std::string backing_, plain_, mnt_;
  Mount mount_;

 private:
  template <typename F>
  static Outcome Once(F f, const std::string& root) {
    errno = 0;
    long r = static_cast<long>(f(root));
    return Outcome{r, r < 0 ? errno : 0};
  }
};

}  // namespace ktmfs::fs::testing

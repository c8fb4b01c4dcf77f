#include "fs/tx/inode_flags_check.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

// Sets inode flags on paths and clears them again on every exit, so the temporary directory
// can be removed.
class Flags {
 public:
  ~Flags() {
    for (const std::string& p : set_)
      (void)Set(p, 0);
  }
  // 0, or the errno FS_IOC_SETFLAGS failed with (EPERM without CAP_LINUX_IMMUTABLE, ENOTTY or
  // EOPNOTSUPP on a filesystem without flags).
  int Set(const std::string& path, int flags) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errno;
    int r = ::ioctl(fd, FS_IOC_SETFLAGS, &flags);
    int err = r == 0 ? 0 : errno;
    ::close(fd);
    if (err == 0 && flags != 0) set_.push_back(path);
    return err;
  }

 private:
  std::vector<std::string> set_;
};

PlannedObject Existing(uint64_t ino, const std::string& original,
                       std::vector<std::string> finals) {
  PlannedObject o;
  o.id = ObjectId::Existing(1, ino);
  o.original = original;
  o.finals = std::move(finals);
  return o;
}
PlannedObject New(uint64_t n, std::vector<std::string> finals) {
  PlannedObject o;
  o.id = ObjectId::New(n);
  o.finals = std::move(finals);
  return o;
}

class InodeFlagsCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    ::mkdir((dir_.path() + "/d").c_str(), 0755);
    WriteFile(dir_.path() + "/d/f", "x");
    WriteFile(dir_.path() + "/g", "x");
    if (int err = flags_.Set(dir_.path() + "/g", FS_APPEND_FL); err != 0)
      GTEST_SKIP() << "cannot set inode flags under /tmp: " << strerror(err);
    (void)flags_.Set(dir_.path() + "/g", 0);
  }
  Status Check(std::vector<PlannedObject> objects) {
    ApplyPlan plan;
    plan.objects = std::move(objects);
    return CheckNoUnchangeableFlags(dir_.path(), plan);
  }
  TempDir dir_;
  Flags flags_;
};

TEST_F(InodeFlagsCheck, AChangedImmutableOrAppendOnlyObjectIsRefused) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d/f", FS_IMMUTABLE_FL), 0);
  Status s = Check({Existing(2, "d/f", {"d/f"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/d/f is immutable"), std::string::npos) << s.message();
  ASSERT_EQ(flags_.Set(dir_.path() + "/g", FS_APPEND_FL), 0);
  s = Check({Existing(3, "g", {})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/g is append-only"), std::string::npos) << s.message();
  // Objects the plan does not touch do not matter.
  EXPECT_TRUE(Check({New(1, {"h"})}).ok());
}

TEST_F(InodeFlagsCheck, AnAppendOnlyDirectoryTakesNewNamesOnly) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d", FS_APPEND_FL), 0);
  EXPECT_TRUE(Check({New(1, {"d/new"}), Existing(2, "d/f", {"d/f"})}).ok());
  EXPECT_EQ(Check({Existing(2, "d/f", {"d/f2"})}).code(), EPERM);  // renamed away
  EXPECT_EQ(Check({Existing(2, "d/f", {})}).code(), EPERM);        // removed
  EXPECT_TRUE(Check({Existing(3, "g", {"g", "d/g"})}).ok());       // linked in
}

TEST_F(InodeFlagsCheck, AnImmutableDirectoryTakesNoNameChange) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d", FS_IMMUTABLE_FL), 0);
  EXPECT_TRUE(Check({Existing(2, "d/f", {"d/f"})}).ok());  // its file's content may change
  Status s = Check({New(1, {"d/new"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/d is immutable"), std::string::npos) << s.message();
  EXPECT_EQ(Check({Existing(2, "d/f", {})}).code(), EPERM);
}

TEST_F(InodeFlagsCheck, ADirectoryUnderAMovedOneIsFoundWhereItIsNow) {
  ::mkdir((dir_.path() + "/p").c_str(), 0755);
  ::mkdir((dir_.path() + "/p/i").c_str(), 0755);
  ASSERT_EQ(flags_.Set(dir_.path() + "/p/i", FS_IMMUTABLE_FL), 0);
  Status s = Check({Existing(4, "p", {"q"}), New(1, {"q/i/new"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/p/i is immutable"), std::string::npos) << s.message();
  EXPECT_TRUE(Check({Existing(4, "p", {"q"}), New(1, {"q/new"})}).ok());
}

}  // namespace
}  // namespace ktmfs::fstx

#include "fs/tx/apply_targets_check.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
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

PlannedObject New(uint64_t n, std::vector<std::string> finals) {
  PlannedObject o;
  o.id = ObjectId::New(n);
  o.finals = std::move(finals);
  return o;
}

class ApplyTargetsCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    ::mkdir((dir_.path() + "/d").c_str(), 0755);
    WriteFile(dir_.path() + "/d/f", "x");
    WriteFile(dir_.path() + "/g", "x");
    if (int err = flags_.Set(dir_.path() + "/g", FS_APPEND_FL); err != 0)
      GTEST_SKIP() << "cannot set inode flags under /tmp: " << strerror(err);
    (void)flags_.Set(dir_.path() + "/g", 0);
  }
  // The object now at `rel`, with its identity.
  PlannedObject Existing(const std::string& rel, std::vector<std::string> finals) {
    struct stat st;
    EXPECT_EQ(::lstat((dir_.path() + "/" + rel).c_str(), &st), 0) << rel;
    PlannedObject o;
    o.id = ObjectId::Existing(st.st_dev, st.st_ino);
    o.original = rel;
    o.finals = std::move(finals);
    return o;
  }
  Status Check(std::vector<PlannedObject> objects) {
    ApplyPlan plan;
    plan.objects = std::move(objects);
    return CheckApplyTargets(dir_.path(), plan);
  }
  TempDir dir_;
  Flags flags_;
};

TEST_F(ApplyTargetsCheck, AChangedImmutableOrAppendOnlyObjectIsRefused) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d/f", FS_IMMUTABLE_FL), 0);
  Status s = Check({Existing("d/f", {"d/f"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/d/f is immutable"), std::string::npos) << s.message();
  ASSERT_EQ(flags_.Set(dir_.path() + "/g", FS_APPEND_FL), 0);
  s = Check({Existing("g", {})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/g is append-only"), std::string::npos) << s.message();
  // Objects the plan does not touch do not matter.
  EXPECT_TRUE(Check({New(1, {"h"})}).ok());
}

TEST_F(ApplyTargetsCheck, AnAppendOnlyDirectoryTakesNewNamesOnly) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d", FS_APPEND_FL), 0);
  EXPECT_TRUE(Check({New(1, {"d/new"}), Existing("d/f", {"d/f"})}).ok());
  EXPECT_EQ(Check({Existing("d/f", {"d/f2"})}).code(), EPERM);  // renamed away
  EXPECT_EQ(Check({Existing("d/f", {})}).code(), EPERM);        // removed
  EXPECT_TRUE(Check({Existing("g", {"g", "d/g"})}).ok());       // linked in
}

TEST_F(ApplyTargetsCheck, AnImmutableDirectoryTakesNoNameChange) {
  ASSERT_EQ(flags_.Set(dir_.path() + "/d", FS_IMMUTABLE_FL), 0);
  EXPECT_TRUE(Check({Existing("d/f", {"d/f"})}).ok());  // its file's content may change
  Status s = Check({New(1, {"d/new"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/d is immutable"), std::string::npos) << s.message();
  EXPECT_EQ(Check({Existing("d/f", {})}).code(), EPERM);
}

TEST_F(ApplyTargetsCheck, ADirectoryUnderAMovedOneIsFoundWhereItIsNow) {
  ::mkdir((dir_.path() + "/p").c_str(), 0755);
  ::mkdir((dir_.path() + "/p/i").c_str(), 0755);
  ASSERT_EQ(flags_.Set(dir_.path() + "/p/i", FS_IMMUTABLE_FL), 0);
  Status s = Check({Existing("p", {"q"}), New(1, {"q/i/new"})});
  EXPECT_EQ(s.code(), EPERM);
  EXPECT_NE(s.message().find("/p/i is immutable"), std::string::npos) << s.message();
  EXPECT_TRUE(Check({Existing("p", {"q"}), New(1, {"q/new"})}).ok());
}

TEST_F(ApplyTargetsCheck, AnObjectReplacedOrRemovedBehindTheDaemonIsRefused) {
  PlannedObject f = Existing("d/f", {"d/f"});
  ASSERT_EQ(::rename((dir_.path() + "/g").c_str(), (dir_.path() + "/d/f").c_str()), 0);
  Status s = Check({f});
  EXPECT_EQ(s.code(), ESTALE);
  EXPECT_NE(s.message().find("/d/f is no longer the object"), std::string::npos) << s.message();
  ASSERT_EQ(::unlink((dir_.path() + "/d/f").c_str()), 0);
  EXPECT_EQ(Check({f}).code(), ESTALE);
}

// An object removed behind the daemon frees its number, which the next object made there may
// take: the number then matches, the object does not. The transaction knows its objects'
// handles, which carry their generation. Before, such a commit wrote the transaction's changes
// into the new object (one that a user could not even open, made by root).
TEST_F(ApplyTargetsCheck, AnotherObjectThatTookTheNumberIsRefused) {
  PlannedObject f = Existing("d/f", {"d/f"});
  auto own = ObjectHandle::At((dir_.path() + "/d/f").c_str());
  auto other = ObjectHandle::At((dir_.path() + "/g").c_str());
  if (!own || !other) GTEST_SKIP() << "no file handles under /tmp: " << strerror(errno);
  const auto key = std::make_pair(static_cast<dev_t>(f.id.dev), static_cast<ino_t>(f.id.ino));
  ApplyPlan plan;
  plan.objects = {f};
  EXPECT_TRUE(CheckApplyTargets(dir_.path(), plan, {{key, *own}}).ok());
  // As if d/f had been replaced by an object that took its number: its handle is another.
  Status s = CheckApplyTargets(dir_.path(), plan, {{key, *other}});
  EXPECT_EQ(s.code(), ESTALE);
  EXPECT_NE(s.message().find("/d/f is no longer the object"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("another that took its number"), std::string::npos) << s.message();
}

TEST_F(ApplyTargetsCheck, ASymlinkOrAFileWhereADirectoryWasIsRefused) {
  PlannedObject f = Existing("d/f", {"d/f"});
  ASSERT_EQ(::rename((dir_.path() + "/d").c_str(), (dir_.path() + "/aside").c_str()), 0);
  ASSERT_EQ(::symlink("aside", (dir_.path() + "/d").c_str()), 0);
  Status s = Check({f});
  EXPECT_EQ(s.code(), ELOOP);
  EXPECT_NE(s.message().find("symlink on the way"), std::string::npos) << s.message();
  EXPECT_EQ(Check({New(1, {"d/new"})}).code(), ELOOP);
  // A file where a new name's directory is, unless the plan removes it.
  PlannedObject g = Existing("g", {});
  EXPECT_EQ(Check({New(1, {"g/new"})}).code(), ENOTDIR);
  EXPECT_TRUE(Check({g, New(1, {"g"}), New(2, {"g/new"})}).ok());
}

TEST_F(ApplyTargetsCheck, SomethingMadeAtANewNameIsRefused) {
  PlannedObject g = Existing("g", {"d/g"});
  EXPECT_TRUE(Check({New(1, {"d/new"}), g}).ok());
  WriteFile(dir_.path() + "/d/new", "planted");
  WriteFile(dir_.path() + "/d/g", "planted");
  Status s = Check({New(1, {"d/new"})});
  EXPECT_EQ(s.code(), EEXIST);
  EXPECT_NE(s.message().find("/d/new was made"), std::string::npos) << s.message();
  EXPECT_EQ(Check({g}).code(), EEXIST);
  // Unless the plan moves it away, or removes it.
  EXPECT_TRUE(Check({Existing("d/new", {}), New(1, {"d/new"})}).ok());
  EXPECT_TRUE(Check({Existing("d/g", {"d/g2"}), g}).ok());
}

// A bind mount of `dir` onto itself, unmounted again on every exit.
class SelfBind {
 public:
  explicit SelfBind(std::string dir) : dir_(std::move(dir)) {
    err_ = ::mount(dir_.c_str(), dir_.c_str(), nullptr, MS_BIND, nullptr) == 0 ? 0 : errno;
  }
  ~SelfBind() {
    if (err_ == 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  int error() const { return err_; }

 private:
  std::string dir_;
  int err_ = 0;
};

// Apply renames between staging and the backing directory, and no rename crosses a mount: a
// bind mount of the same filesystem (same device number) made behind the daemon's back would
// leave the commit acknowledged, its apply failing with EXDEV for ever.
TEST_F(ApplyTargetsCheck, NamesMovedAcrossAMountInsideTheBackingDirectoryAreRefused) {
  SelfBind bind(dir_.path() + "/d");
  if (bind.error() != 0) GTEST_SKIP() << "cannot bind-mount here: " << strerror(bind.error());
  EXPECT_TRUE(Check({Existing("d/f", {"d/f"})}).ok());  // content written in place
  EXPECT_TRUE(Check({Existing("g", {"h"})}).ok());      // on the root's own mount
  Status s = Check({Existing("d/f", {})});
  EXPECT_EQ(s.code(), EXDEV);
  EXPECT_NE(s.message().find("/d/f is on another mount"), std::string::npos) << s.message();
  s = Check({New(1, {"d/new"})});
  EXPECT_EQ(s.code(), EXDEV);
  EXPECT_NE(s.message().find("/d is on another mount"), std::string::npos) << s.message();
  EXPECT_EQ(Check({Existing("g", {"g", "d/g"})}).code(), EXDEV);     // linked in
  EXPECT_EQ(Check({Existing("d/f", {"d/f", "f2"})}).code(), EXDEV);  // linked out
  EXPECT_EQ(Check({Existing("d", {"e"})}).code(), EXDEV);            // the mount point moved
}

}  // namespace
}  // namespace ktmfs::fstx

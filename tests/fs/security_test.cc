// What the mount must never allow: reaching the state directory, leaving the backing tree, or
// doing as another user what the backing filesystem would deny.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <set>

#include "compare_fixture.h"

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

namespace ktmfs::fs::testing {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kTeam = 4242;  // a supplementary group of the caller in some cases

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d))
    names.insert(e->d_name);
  closedir(d);
  return names;
}

int Err(long r) {
  return r < 0 ? errno : 0;
}

using StateDirTest = MountedTest;

TEST_F(StateDirTest, InvisibleAndUnreachable) {
  ASSERT_TRUE(WriteFile(backing_ + "/.ktmfs/other", "state"));
  ASSERT_TRUE(WriteFile(mnt_ + "/f", "x"));
  ASSERT_EQ(mkdir((mnt_ + "/d").c_str(), 0755), 0);
  struct stat st;
  EXPECT_EQ(Err(stat((mnt_ + "/.ktmfs").c_str(), &st)), ENOENT);
  EXPECT_EQ(Err(stat((mnt_ + "/.ktmfs/other").c_str(), &st)), ENOENT);
  EXPECT_EQ(List(mnt_), (std::set<std::string>{".", "..", "f", "d"}));
  EXPECT_EQ(Err(mkdir((mnt_ + "/.ktmfs").c_str(), 0755)), EPERM);
  EXPECT_EQ(Err(open((mnt_ + "/.ktmfs").c_str(), O_CREAT | O_WRONLY, 0644)), EPERM);
  EXPECT_EQ(Err(symlink("x", (mnt_ + "/.ktmfs").c_str())), EPERM);
  EXPECT_EQ(Err(link((mnt_ + "/f").c_str(), (mnt_ + "/.ktmfs").c_str())), EPERM);
  EXPECT_EQ(Err(rename((mnt_ + "/f").c_str(), (mnt_ + "/.ktmfs").c_str())), EPERM);
  EXPECT_EQ(Err(rename((mnt_ + "/d").c_str(), (mnt_ + "/.ktmfs").c_str())), EPERM);
  EXPECT_EQ(Err(rename((mnt_ + "/.ktmfs").c_str(), (mnt_ + "/moved").c_str())), ENOENT);
  EXPECT_EQ(Err(rename((mnt_ + "/f").c_str(), (mnt_ + "/.ktmfs/f").c_str())), ENOENT);
  EXPECT_EQ(Err(rename((mnt_ + "/.ktmfs/other").c_str(), (mnt_ + "/other").c_str())), ENOENT);
  EXPECT_EQ(Err(rmdir((mnt_ + "/.ktmfs").c_str())), ENOENT);
  EXPECT_EQ(Err(unlink((mnt_ + "/.ktmfs").c_str())), ENOENT);
  // The backing state is untouched.
  ASSERT_EQ(stat((backing_ + "/.ktmfs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(ReadFile(backing_ + "/.ktmfs/other"), "state");
}

class StateInsideSubdirTest : public MountedTest {
 protected:
  void PrepareBacking() override { ASSERT_EQ(mkdir((backing_ + "/sub").c_str(), 0755), 0); }
  std::vector<std::string> MountOptions() const override {
    return {"state=" + backing_ + "/sub/st"};
  }
};

TEST_F(StateInsideSubdirTest, HiddenWhereverItIs) {
  struct stat st;
  ASSERT_EQ(stat((backing_ + "/sub/st").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_NE(stat((backing_ + "/.ktmfs").c_str(), &st), 0) << "the default was created too";
  EXPECT_EQ(List(mnt_ + "/sub"), (std::set<std::string>{".", ".."}));
  EXPECT_EQ(Err(stat((mnt_ + "/sub/st").c_str(), &st)), ENOENT);
  EXPECT_EQ(Err(mkdir((mnt_ + "/sub/st").c_str(), 0755)), EPERM);
  // Its parent cannot be moved: the daemon's staging is reached by the state directory's path,
  // so a moved parent had the next commit make a new state directory there, and the next
  // mount start a new log beside the moved one.
  EXPECT_EQ(Err(rename((mnt_ + "/sub").c_str(), (mnt_ + "/sub2").c_str())), EBUSY);
  EXPECT_EQ(Err(stat((mnt_ + "/sub2").c_str(), &st)), ENOENT);
  EXPECT_EQ(Err(stat((mnt_ + "/sub/st").c_str(), &st)), ENOENT);
}

using EscapeTest = MountedTest;

TEST_F(EscapeTest, DotDotAtTheRootIsTheMountsParent) {
  ASSERT_EQ(mkdir((mnt_ + "/a").c_str(), 0755), 0);
  struct stat up, parent, backing_parent_marker;
  ASSERT_TRUE(WriteFile(tmp_.path() + "/marker", "outside"));
  ASSERT_EQ(stat((mnt_ + "/a/../..").c_str(), &up), 0);
  ASSERT_EQ(stat(tmp_.path().c_str(), &parent), 0);
  EXPECT_EQ(up.st_ino, parent.st_ino);  // the kernel walks up the mount tree, not the daemon
  struct stat root;
  ASSERT_EQ(stat((mnt_ + "/a/..").c_str(), &root), 0);
  struct stat b;
  ASSERT_EQ(stat(backing_.c_str(), &b), 0);
  EXPECT_EQ(root.st_ino, b.st_ino);
  (void)backing_parent_marker;
}

// File descriptors the daemon holds must all be inside the backing directory or be its own
// plumbing (/dev/fuse, pipes for splice, its log, its own mount table, watched for remounts).
std::vector<std::string> DaemonFdsOutside(pid_t pid, const std::string& backing,
                                          const std::string& log) {
  std::vector<std::string> outside;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  const std::string mount_table = "/proc/" + std::to_string(pid) + "/mountinfo";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {"cannot list " + dir};
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[PATH_MAX] = {};
    if (readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1) < 0) continue;
    std::string t = target;
    bool ok = t.compare(0, backing.size(), backing) == 0 || t == "/dev/fuse" || t == "/dev/null" ||
              t == log || t == mount_table || t.rfind("pipe:", 0) == 0 ||
              t.rfind("anon_inode:", 0) == 0 || t.rfind("socket:", 0) == 0;
    if (!ok) outside.push_back(t);
  }
  closedir(d);
  return outside;
}

TEST_F(EscapeTest, SymlinksOutsideAreReturnedAndFollowedByTheKernel) {
  ASSERT_EQ(symlink("/etc/passwd", (backing_ + "/abs").c_str()), 0);
  ASSERT_EQ(symlink("../../../../../../../../etc/passwd", (backing_ + "/rel").c_str()), 0);
  ASSERT_EQ(symlink("/etc", (backing_ + "/etcdir").c_str()), 0);
  struct stat st;
  ASSERT_EQ(lstat((mnt_ + "/abs").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  char buf[PATH_MAX] = {};
  ASSERT_GT(readlink((mnt_ + "/abs").c_str(), buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "/etc/passwd");
  // Opening through the links works, but the file is the host's, reached by the kernel's own
  // path walk: it is not a file of the FUSE mount.
  int fds[3] = {open((mnt_ + "/abs").c_str(), O_RDONLY), open((mnt_ + "/rel").c_str(), O_RDONLY),
                open((mnt_ + "/etcdir/passwd").c_str(), O_RDONLY)};
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    struct statfs sf;
    ASSERT_EQ(fstatfs(fd, &sf), 0);
    EXPECT_NE(static_cast<unsigned long>(sf.f_type), static_cast<unsigned long>(FUSE_SUPER_MAGIC));
  }
  // ...and the daemon holds nothing outside its backing directory while they are open.
  EXPECT_EQ(DaemonFdsOutside(mount_.pid(), backing_, mnt_ + ".log"), std::vector<std::string>{});
  for (int fd : fds)
    close(fd);
  // A component below a symlink is never resolved by the daemon inside the tree either.
  EXPECT_EQ(Err(open((mnt_ + "/abs/x").c_str(), O_RDONLY)), ENOTDIR);
}

// File capabilities go with the data: a write removes them, as on the backing filesystem. The
// daemon remembers that a file has none (the kernel asks before every write), so a capability
// set later must be seen, and removed by the next write again.
using CapabilityTest = MountedTest;

TEST_F(CapabilityTest, SetIsSeenAndAWriteRemovesIt) {
  // struct vfs_cap_data, revision 2, effective, CAP_NET_RAW permitted.
  const uint32_t caps[5] = {0x02000001u, 1u << 13, 0, 0, 0};
  auto size = [](const std::string& f) {
    return getxattr(f.c_str(), "security.capability", nullptr, 0);
  };
  auto append = [](const std::string& f) {
    int fd = open(f.c_str(), O_WRONLY | O_APPEND);
    if (fd < 0) return -1L;
    long n = write(fd, "x", 1);
    return close(fd) == 0 ? n : -1L;
  };
  auto set = [&](const std::string& f) {
    return static_cast<long>(setxattr(f.c_str(), "security.capability", caps, sizeof caps, 0));
  };
  for (const std::string& root : {plain_, mnt_})
    ASSERT_TRUE(WriteFile(root + "/f", "data"));
  auto f = [](const std::string& r) { return r + "/f"; };
  // Writes before any capability: the mount learns there is none.
  EXPECT_EQ(Same([&](const std::string& r) { return append(f(r)); }).ret, 1);
  EXPECT_EQ(Same([&](const std::string& r) { return append(f(r)); }).ret, 1);
  for (int round = 0; round < 2; round++) {
    EXPECT_EQ(Same([&](const std::string& r) { return set(f(r)); }).ret, 0);
    EXPECT_EQ(Same([&](const std::string& r) { return size(f(r)); }).ret, long{sizeof caps});
    EXPECT_EQ(Same([&](const std::string& r) { return append(f(r)); }).ret, 1);
    EXPECT_EQ(Same([&](const std::string& r) { return size(f(r)); }).err, ENODATA);
    EXPECT_EQ(getxattr(f(backing_).c_str(), "security.capability", nullptr, 0), -1);
  }
}

// Another user's files through an allow_other mount: what the backing filesystem denies, the
// mount denies; what the user creates, the user owns. Run with and without
// default_permissions (without it, the daemon checks as the caller).
class OtherUserTest : public MountedTest, public ::testing::WithParamInterface<bool> {
 protected:
  std::vector<std::string> MountOptions() const override {
    if (GetParam()) return {"allow_other,default_permissions"};
    return {"allow_other"};
  }
  void PrepareBacking() override {
    for (const std::string& root : {backing_, plain_}) {
      ASSERT_TRUE(WriteFile(root + "/secret", "s"));
      ASSERT_EQ(chmod((root + "/secret").c_str(), 0600), 0);
      ASSERT_TRUE(WriteFile(root + "/pub", "p"));
      ASSERT_EQ(chmod((root + "/pub").c_str(), 0644), 0);
      ASSERT_EQ(mkdir((root + "/shared").c_str(), 01777), 0);
      ASSERT_EQ(chmod((root + "/shared").c_str(), 01777), 0);
      ASSERT_TRUE(WriteFile(root + "/shared/rootfile", "r"));
      ASSERT_EQ(mkdir((root + "/private").c_str(), 0700), 0);
      ASSERT_EQ(mkdir((root + "/team").c_str(), 0770), 0);
      ASSERT_EQ(chown((root + "/team").c_str(), 0, kTeam), 0);
      ASSERT_EQ(chmod((root + "/team").c_str(), 0770), 0);
      ASSERT_EQ(mkdir((root + "/sgid").c_str(), 0775), 0);
      ASSERT_EQ(chown((root + "/sgid").c_str(), 0, kTeam), 0);
      ASSERT_EQ(chmod((root + "/sgid").c_str(), 02777), 0);
      ASSERT_TRUE(WriteFile(root + "/private/inner", "i"));
    }
  }
  // Runs `op` on the plain directory and on the mount as nobody; expects the same errno.
  int SameAsNobody(const std::string& what, const std::function<long(const std::string&)>& op,
                   const std::vector<gid_t>& groups = {}) {
    auto run = [&](const std::string& root) {
      return AsUser(
          kNobody, kNobody, [&] { return Err(op(root)); }, 022, groups);
    };
    int plain = run(plain_), mounted = run(mnt_);
    EXPECT_EQ(plain, mounted) << what << ": plain directory vs ktmfs";
    return mounted;
  }
};

TEST_P(OtherUserTest, DeniedWhereTheBackingFilesystemDenies) {
  auto p = [](const std::string& r, const char* rel) { return r + "/" + rel; };
  EXPECT_EQ(SameAsNobody("read secret",
                         [&](const std::string& r) {
                           int fd = open(p(r, "secret").c_str(), O_RDONLY);
                           if (fd >= 0) close(fd);
                           return fd;
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("read pub",
                         [&](const std::string& r) {
                           int fd = open(p(r, "pub").c_str(), O_RDONLY);
                           if (fd >= 0) close(fd);
                           return fd;
                         }),
            0);
  EXPECT_EQ(SameAsNobody("write pub",
                         [&](const std::string& r) {
                           int fd = open(p(r, "pub").c_str(), O_WRONLY);
                           if (fd >= 0) close(fd);
                           return fd;
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("truncate pub",
                         [&](const std::string& r) { return truncate(p(r, "pub").c_str(), 0); }),
            EACCES);
  EXPECT_EQ(SameAsNobody("create in root",
                         [&](const std::string& r) {
                           return open(p(r, "new").c_str(), O_CREAT | O_WRONLY, 0644);
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("mkdir in root",
                         [&](const std::string& r) { return mkdir(p(r, "nd").c_str(), 0755); }),
            EACCES);
  EXPECT_EQ(SameAsNobody("stat in private",
                         [&](const std::string& r) {
                           struct stat st;
                           return stat(p(r, "private/inner").c_str(), &st);
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("list private",
                         [&](const std::string& r) {
                           DIR* d = opendir(p(r, "private").c_str());
                           if (d == nullptr) return -1L;
                           closedir(d);
                           return 0L;
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("chmod pub",
                         [&](const std::string& r) { return chmod(p(r, "pub").c_str(), 0666); }),
            EPERM);
  EXPECT_EQ(
      SameAsNobody("unlink pub", [&](const std::string& r) { return unlink(p(r, "pub").c_str()); }),
      EACCES);
  EXPECT_EQ(
      SameAsNobody("sticky unlink",
                   [&](const std::string& r) { return unlink(p(r, "shared/rootfile").c_str()); }),
      EPERM);
  EXPECT_EQ(SameAsNobody("sticky rename",
                         [&](const std::string& r) {
                           return rename(p(r, "shared/rootfile").c_str(), p(r, "shared/x").c_str());
                         }),
            EPERM);
  EXPECT_EQ(SameAsNobody("setxattr pub",
                         [&](const std::string& r) {
                           return setxattr(p(r, "pub").c_str(), "user.x", "1", 1, 0);
                         }),
            EACCES);
  EXPECT_EQ(SameAsNobody("utimes pub",
                         [&](const std::string& r) {
                           return utimensat(AT_FDCWD, p(r, "pub").c_str(), nullptr, 0);
                         }),
            EACCES);
  EXPECT_EQ(ReadFile(backing_ + "/pub"), "p");
  EXPECT_EQ(ReadFile(backing_ + "/shared/rootfile"), "r");
}

TEST_P(OtherUserTest, CreatedObjectsBelongToTheCaller) {
  auto p = [](const std::string& r, const char* rel) { return r + "/" + rel; };
  EXPECT_EQ(SameAsNobody("create",
                         [&](const std::string& r) {
                           int fd = open(p(r, "shared/mine").c_str(), O_CREAT | O_WRONLY, 0666);
                           if (fd < 0) return -1L;
                           long n = write(fd, "m", 1);
                           close(fd);
                           return n;
                         }),
            0);
  EXPECT_EQ(
      SameAsNobody("mkdir",
                   [&](const std::string& r) { return mkdir(p(r, "shared/dir").c_str(), 0777); }),
      0);
  EXPECT_EQ(SameAsNobody(
                "symlink",
                [&](const std::string& r) { return symlink("mine", p(r, "shared/link").c_str()); }),
            0);
  EXPECT_EQ(
      SameAsNobody("mkfifo",
                   [&](const std::string& r) { return mkfifo(p(r, "shared/fifo").c_str(), 0666); }),
      0);
  EXPECT_EQ(
      SameAsNobody("chown away",
                   [&](const std::string& r) { return chown(p(r, "shared/mine").c_str(), 0, 0); }),
      EPERM);
  EXPECT_EQ(
      SameAsNobody("own chmod",
                   [&](const std::string& r) { return chmod(p(r, "shared/mine").c_str(), 0600); }),
      0);
  for (const char* name : {"shared/mine", "shared/dir", "shared/link", "shared/fifo"}) {
    struct stat b, pl;
    ASSERT_EQ(lstat((backing_ + "/" + name).c_str(), &b), 0) << name;
    ASSERT_EQ(lstat((plain_ + "/" + name).c_str(), &pl), 0) << name;
    EXPECT_EQ(b.st_uid, kNobody) << name;
    EXPECT_EQ(b.st_gid, kNobody) << name;
    // The caller's umask (022) applies as on the plain directory.
    EXPECT_EQ(b.st_mode, pl.st_mode) << name;
  }
}

TEST_P(OtherUserTest, SupplementaryGroupsCount) {
  auto create = [](const char* rel) {
    return [rel](const std::string& r) {
      int fd = open((r + "/" + rel).c_str(), O_CREAT | O_WRONLY, 0666);
      if (fd >= 0) close(fd);
      return static_cast<long>(fd);
    };
  };
  EXPECT_EQ(SameAsNobody("create in team without the group", create("team/a")), EACCES);
  EXPECT_EQ(SameAsNobody("create in team with the group", create("team/b"), {kTeam}), 0);
  EXPECT_EQ(SameAsNobody("create in a set-group-ID directory", create("sgid/c")), 0);
  struct stat b, sg;
  ASSERT_EQ(stat((backing_ + "/team/b").c_str(), &b), 0);
  EXPECT_EQ(b.st_uid, kNobody);
  EXPECT_EQ(b.st_gid, kNobody);
  ASSERT_EQ(stat((backing_ + "/sgid/c").c_str(), &sg), 0);
  EXPECT_EQ(sg.st_gid, kTeam);  // inherited from the directory, as on the backing filesystem
}

INSTANTIATE_TEST_SUITE_P(Permissions, OtherUserTest, ::testing::Bool(), [](const auto& info) {
  return info.param ? "DefaultPermissions" : "DaemonChecks";
});

}  // namespace
}  // namespace ktmfs::fs::testing

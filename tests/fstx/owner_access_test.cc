// Apply in a daemon without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (an unprivileged user's
// mount): a transaction that writes a file and makes it mode 000 is applied, synced and redone
// like any other.
#include "fs/tx/owner_access.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "fs/tx/apply.h"
#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

// Runs `body` in a child whose effective capabilities lack DAC override and DAC read-search;
// the child's exit status is what body returns (0: all good).
int WithoutDacOverride(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) _exit(90);
    for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH})
      data[cap / 32].effective &= ~(1u << (cap % 32));
    if (::syscall(SYS_capset, &header, data) != 0) _exit(91);
    _exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(OwnerAccess, ApplyAndRedoOfAFileMadeUnreadable) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to drop capabilities from";
  TempDir dir;
  const std::string root = dir.path() + "/backing";
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  WriteFile(root + "/f", "old contents");
  struct stat st;
  ASSERT_EQ(::stat((root + "/f").c_str(), &st), 0);
  const ObjectId f = ObjectId::Existing(st.st_dev, st.st_ino);
  // Written, made mode 000, then cut: each step after the chmod needs write access again.
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteData, .object = f, .path = "f", .offset = 0, .data = "new"},
      {.kind = OpKind::kSetattr, .object = f, .path = "f", .mode = 0, .set_mask = kSetMode},
      {.kind = OpKind::kSetattr, .object = f, .path = "f", .set_mask = kSetSize, .size = 3},
  };
  const ApplyTarget target{root, dir.path() + "/staging"};
  ASSERT_EQ(::mkdir(target.staging_dir.c_str(), 0700), 0);
  // Without the capabilities the plain open is refused: the case exists.
  EXPECT_EQ(WithoutDacOverride([&] {
              ::chmod((root + "/f").c_str(), 0);
              int fd = ::open((root + "/f").c_str(), O_WRONLY);
              ::chmod((root + "/f").c_str(), 0644);
              return fd < 0 && errno == EACCES ? 0 : 1;
            }),
            0);
  // Apply, then apply again from the start as recovery's redo does.
  for (int run = 0; run < 2; ++run) {
    EXPECT_EQ(WithoutDacOverride([&] {
                Status s = ApplyTransaction(target, ops);
                if (!s.ok()) std::fprintf(stderr, "run %d: %s\n", run, s.ToString().c_str());
                return s.ok() ? 0 : 1;
              }),
              0)
        << "run " << run;
    ASSERT_EQ(::stat((root + "/f").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0u);
    EXPECT_EQ(Read(root + "/f"), "new");  // read as root, with the capabilities
  }
}

TEST(OwnerAccess, AnotherOwnersFileStaysRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to drop capabilities from";
  TempDir dir;
  const std::string path = dir.path() + "/theirs";
  WriteFile(path, "x");
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(WithoutDacOverride([&] {
              int fd = OpenAsOwner(path, O_WRONLY);
              return fd < 0 && errno == EACCES ? 0 : 1;
            }),
            0);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);  // its mode untouched
}

// What apply opens by name may have been replaced behind the daemon's back. A FIFO there is not
// opened (the open would wait for a reader or writer for ever), nor a symlink followed; a
// regular file and a directory still are, with the flags asked for.
TEST(OwnerAccess, OpensOnlyRegularFilesAndDirectories) {
  TempDir dir;
  const std::string fifo = dir.path() + "/fifo", link = dir.path() + "/link",
                    file = dir.path() + "/file";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  WriteFile(file, "x");
  ASSERT_EQ(::symlink(file.c_str(), link.c_str()), 0);
  for (int flags : {O_RDONLY, O_WRONLY, O_RDWR}) {
    errno = 0;
    EXPECT_EQ(OpenAsOwner(fifo, flags), -1);
    EXPECT_EQ(errno, ESTALE);
    errno = 0;
    EXPECT_EQ(OpenAsOwner(link, flags), -1);
    EXPECT_EQ(errno, ELOOP);
  }
  const int fd = OpenAsOwner(file, O_WRONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
  EXPECT_EQ(::write(fd, "y", 1), 1);
  ::close(fd);
  EXPECT_EQ(Read(file), "y");
  const int d = OpenAsOwner(dir.path(), O_RDONLY | O_DIRECTORY);
  EXPECT_GE(d, 0);
  if (d >= 0) ::close(d);
}

}  // namespace
}  // namespace ktmfs::fstx

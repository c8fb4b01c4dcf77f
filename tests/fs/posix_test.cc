// POSIX operations through ktmfs give the same results and errno as on a plain directory.
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <set>
#include <thread>

#include "compare_fixture.h"

namespace ktmfs::fs::testing {
namespace {

// Early return keeping errno, for multi-step lambdas compared as one outcome.
#define TRY(expr)               \
  do {                          \
    if ((expr) < 0) return -1L; \
  } while (0)

std::string P(const std::string& root, const std::string& rel) {
  return root + "/" + rel;
}

long MakeFile(const std::string& path, const std::string& data, mode_t mode = 0644) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  TRY(fd);
  ssize_t n = write(fd, data.data(), data.size());
  close(fd);
  return n;
}

// Every case runs against several mount configurations: the cache settings change which
// requests reach the daemon (writeback turns writes into page flushes, zero timeouts make
// every path walk a lookup).
class PosixTest : public MountedTest, public ::testing::WithParamInterface<const char*> {
 protected:
  std::vector<std::string> MountOptions() const override {
    if (std::string(GetParam()).empty()) return {};
    return {GetParam()};
  }
};

std::string MountName(const ::testing::TestParamInfo<const char*>& info) {
  static const char* const kNames[] = {"Default", "Writeback", "DefaultPermissions", "NoCache",
                                       "CachedNames"};
  return kNames[info.index];
}

INSTANTIATE_TEST_SUITE_P(Mounts, PosixTest,
                         ::testing::Values("", "writeback", "allow_other,default_permissions",
                                           "nokeep_cache,attr_timeout=0,entry_timeout=0",
                                           "writeback,entry_timeout=60,negative_timeout=60"),
                         MountName);

TEST_P(PosixTest, CreateWriteReadAndExclusiveCreate) {
  Same([](const std::string& r) {
    int fd = open(P(r, "f").c_str(), O_RDWR | O_CREAT | O_EXCL, 0640);
    TRY(fd);
    TRY(write(fd, "hello world", 11));
    char buf[32] = {};
    TRY(pread(fd, buf, sizeof buf, 6));
    struct stat st;
    TRY(fstat(fd, &st));
    close(fd);
    return std::string(buf) == "world" && st.st_size == 11 && (st.st_mode & 07777) == 0640 ? 0L
                                                                                           : 1L;
  });
  EXPECT_EQ(Same([](const std::string& r) {
              return open(P(r, "f").c_str(), O_RDWR | O_CREAT | O_EXCL, 0640);
            }).err,
            EEXIST);
  Same([](const std::string& r) { return open(P(r, "missing").c_str(), O_RDONLY); });
  EXPECT_EQ(ReadFile(backing_ + "/f"), "hello world");
}

TEST_P(PosixTest, AppendTruncateAndSparseExtend) {
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "a"), "abc"));
    int fd = open(P(r, "a").c_str(), O_WRONLY | O_APPEND);
    TRY(fd);
    TRY(write(fd, "def", 3));
    TRY(pwrite(fd, "XY", 2, 0));  // O_APPEND: still appends
    close(fd);
    return 0L;
  });
  // A large append takes the spliced write path, which cannot write to O_APPEND files itself.
  std::string big(256 << 10, 'b');
  Same([&](const std::string& r) {
    int fd = open(P(r, "a").c_str(), O_WRONLY | O_APPEND);
    TRY(fd);
    TRY(write(fd, big.data(), big.size()));
    close(fd);
    struct stat st;
    TRY(stat(P(r, "a").c_str(), &st));
    return st.st_size;
  });
  EXPECT_EQ(ReadFile(mnt_ + "/a").size(), 8u + big.size());  // "abcdefXY" + big
  Same([](const std::string& r) {
    TRY(truncate(P(r, "a").c_str(), 20));
    struct stat st;
    TRY(stat(P(r, "a").c_str(), &st));
    return st.st_size;
  });
  std::string a = ReadFile(mnt_ + "/a");
  EXPECT_EQ(a, ReadFile(plain_ + "/a"));
  EXPECT_EQ(a.substr(0, 8), "abcdefXY");
  EXPECT_EQ(a.size(), 20u);
}

TEST_P(PosixTest, LargeSequentialWriteAndRead) {
  std::string data(8 << 20, '\0');
  for (size_t i = 0; i < data.size(); i++)
    data[i] = static_cast<char>((i * 131) >> 7);
  ASSERT_TRUE(WriteFile(mnt_ + "/big", data));
  EXPECT_TRUE(ReadFile(mnt_ + "/big") == data);
  EXPECT_TRUE(ReadFile(backing_ + "/big") == data);
}

TEST_P(PosixTest, MkdirRmdirErrors) {
  Same([](const std::string& r) { return mkdir(P(r, "d").c_str(), 0750); });
  Same([](const std::string& r) { return mkdir(P(r, "d").c_str(), 0750); });
  Same([](const std::string& r) { return MakeFile(P(r, "d/f"), "x"); });
  Same([](const std::string& r) { return rmdir(P(r, "d").c_str()); });
  Same([](const std::string& r) { return rmdir(P(r, "d/f").c_str()); });
  Same([](const std::string& r) { return unlink(P(r, "d").c_str()); });
  Same([](const std::string& r) { return mkdir(P(r, "d/f/g").c_str(), 0755); });
  Same([](const std::string& r) { return unlink(P(r, "d/f").c_str()); });
  Same([](const std::string& r) { return rmdir(P(r, "d").c_str()); });
  Same([](const std::string& r) { return rmdir(P(r, "d").c_str()); });
  Same([](const std::string& r) { return unlink(P(r, "nothing").c_str()); });
}

TEST_P(PosixTest, SymlinksAreReturnedNotFollowed) {
  Same([](const std::string& r) { return symlink("target/x", P(r, "l").c_str()); });
  Same([](const std::string& r) {
    char buf[64] = {};
    return readlink(P(r, "l").c_str(), buf, sizeof buf) == 8 && std::string(buf) == "target/x"
               ? 0L
               : -1L;
  });
  Same([](const std::string& r) {
    struct stat st;
    TRY(lstat(P(r, "l").c_str(), &st));
    return S_ISLNK(st.st_mode) ? st.st_size : -1L;
  });
  Same([](const std::string& r) { return open(P(r, "l").c_str(), O_RDONLY); });  // dangling
  Same([](const std::string& r) { return open(P(r, "l").c_str(), O_RDONLY | O_NOFOLLOW); });
  Same([](const std::string& r) { return symlink("y", P(r, "l").c_str()); });
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "t"), "via link"));
    TRY(symlink("t", P(r, "l2").c_str()));
    struct stat st;
    TRY(stat(P(r, "l2").c_str(), &st));
    return st.st_size;
  });
}

TEST_P(PosixTest, HardLinksShareTheInode) {
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "a"), "x"));
    TRY(link(P(r, "a").c_str(), P(r, "b").c_str()));
    struct stat sa, sb;
    TRY(stat(P(r, "a").c_str(), &sa));
    TRY(stat(P(r, "b").c_str(), &sb));
    return sa.st_ino == sb.st_ino && sa.st_nlink == 2 && sb.st_nlink == 2 ? 0L : 1L;
  });
  Same([](const std::string& r) { return link(P(r, "a").c_str(), P(r, "b").c_str()); });
  Same([](const std::string& r) { return link(P(r, "nope").c_str(), P(r, "c").c_str()); });
  Same([](const std::string& r) {
    TRY(unlink(P(r, "a").c_str()));
    struct stat sb;
    TRY(stat(P(r, "b").c_str(), &sb));
    return static_cast<long>(sb.st_nlink);
  });
  struct stat m, b;
  ASSERT_EQ(stat((mnt_ + "/b").c_str(), &m), 0);
  ASSERT_EQ(stat((backing_ + "/b").c_str(), &b), 0);
  EXPECT_EQ(m.st_ino, b.st_ino);
}

TEST_P(PosixTest, RenameVariants) {
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "a"), "A"));
    TRY(MakeFile(P(r, "b"), "BB"));
    TRY(mkdir(P(r, "d").c_str(), 0755));
    TRY(mkdir(P(r, "e").c_str(), 0755));
    return MakeFile(P(r, "e/x"), "X");
  });
  Same([](const std::string& r) {
    return renameat2(AT_FDCWD, P(r, "a").c_str(), AT_FDCWD, P(r, "b").c_str(), RENAME_NOREPLACE);
  });
  Same([](const std::string& r) {
    TRY(renameat2(AT_FDCWD, P(r, "a").c_str(), AT_FDCWD, P(r, "b").c_str(), RENAME_EXCHANGE));
    struct stat sa;
    TRY(stat(P(r, "a").c_str(), &sa));
    return sa.st_size;  // 2: the contents swapped
  });
  Same([](const std::string& r) { return rename(P(r, "a").c_str(), P(r, "b").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "b").c_str(), P(r, "d").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "d").c_str(), P(r, "e").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "e").c_str(), P(r, "d").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "d").c_str(), P(r, "d/sub").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "b").c_str(), P(r, "d/b2").c_str()); });
  Same([](const std::string& r) { return rename(P(r, "gone").c_str(), P(r, "x").c_str()); });
  Same([](const std::string& r) {
    return renameat2(AT_FDCWD, P(r, "d").c_str(), AT_FDCWD, P(r, "z").c_str(), RENAME_EXCHANGE);
  });
  EXPECT_EQ(ReadFile(mnt_ + "/d/b2"), "BB");
}

TEST_P(PosixTest, OpenFileSurvivesRenameAndUnlink) {
  ASSERT_GE(MakeFile(mnt_ + "/f", "data"), 0);
  int fd = open((mnt_ + "/f").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(mkdir((mnt_ + "/d").c_str(), 0755), 0);
  ASSERT_EQ(rename((mnt_ + "/f").c_str(), (mnt_ + "/d/g").c_str()), 0);
  EXPECT_EQ(pwrite(fd, "DATA", 4, 0), 4);
  EXPECT_EQ(ReadFile(mnt_ + "/d/g"), "DATA");
  ASSERT_EQ(unlink((mnt_ + "/d/g").c_str()), 0);
  char buf[8] = {};
  EXPECT_EQ(pread(fd, buf, 4, 0), 4);
  EXPECT_STREQ(buf, "DATA");
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_nlink, 0u);
  close(fd);
}

TEST_P(PosixTest, ChmodChownTruncate) {
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "f"), "0123456789"));
    TRY(chmod(P(r, "f").c_str(), 04751));
    TRY(chown(P(r, "f").c_str(), 1234, 5678));
    TRY(truncate(P(r, "f").c_str(), 3));
    struct stat st;
    TRY(stat(P(r, "f").c_str(), &st));
    return static_cast<long>(st.st_mode & 07777) * 1000000 + st.st_uid * 10 + st.st_size;
  });
  Same([](const std::string& r) {
    int fd = open(P(r, "f").c_str(), O_RDWR);
    TRY(fd);
    TRY(fchmod(fd, 0600));
    TRY(fchown(fd, 42, 43));
    TRY(ftruncate(fd, 100));
    struct stat st;
    TRY(fstat(fd, &st));
    close(fd);
    return static_cast<long>(st.st_mode & 07777) * 1000000 + st.st_gid * 1000 + st.st_size;
  });
  Same([](const std::string& r) { return truncate(P(r, "f").c_str(), -1); });
  Same([](const std::string& r) { return chmod(P(r, "nope").c_str(), 0600); });
}

TEST_P(PosixTest, Utimens) {
  Same([](const std::string& r) {
    TRY(MakeFile(P(r, "f"), "x"));
    timespec ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    TRY(utimensat(AT_FDCWD, P(r, "f").c_str(), ts, 0));
    timespec keep[2] = {{0, UTIME_OMIT}, {1200000000, 5}};
    TRY(utimensat(AT_FDCWD, P(r, "f").c_str(), keep, 0));
    struct stat st;
    TRY(stat(P(r, "f").c_str(), &st));
    return st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789 &&
                   st.st_mtim.tv_sec == 1200000000 && st.st_mtim.tv_nsec == 5
               ? 0L
               : 1L;
  });
  Same([](const std::string& r) {
    timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    int fd = open(P(r, "f").c_str(), O_RDONLY);
    TRY(fd);
    TRY(futimens(fd, now));
    struct stat st;
    TRY(fstat(fd, &st));
    close(fd);
    return st.st_atim.tv_sec > 1600000000 && st.st_mtim.tv_sec == 1200000000 ? 0L : 1L;
  });
  Same([](const std::string& r) {  // a symlink's own times
    TRY(symlink("f", P(r, "l").c_str()));
    timespec ts[2] = {{1000, 0}, {2000, 0}};
    TRY(utimensat(AT_FDCWD, P(r, "l").c_str(), ts, AT_SYMLINK_NOFOLLOW));
    struct stat st;
    TRY(lstat(P(r, "l").c_str(), &st));
    return st.st_mtim.tv_sec;
  });
}

TEST_P(PosixTest, FifoAndSpecialFiles) {
  Same([](const std::string& r) {
    TRY(mkfifo(P(r, "fifo").c_str(), 0644));
    struct stat st;
    TRY(lstat(P(r, "fifo").c_str(), &st));
    return S_ISFIFO(st.st_mode) ? static_cast<long>(st.st_mode & 0777) : -2L;
  });
  Same([](const std::string& r) { return mknod(P(r, "fifo").c_str(), S_IFIFO | 0600, 0); });
  Same([](const std::string& r) {  // a device node can be made (the mount is nodev)
    TRY(mknod(P(r, "null").c_str(), S_IFCHR | 0600, makedev(1, 3)));
    struct stat st;
    TRY(lstat(P(r, "null").c_str(), &st));
    return S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) ? 0L : 1L;
  });
  Same([](const std::string& r) {
    TRY(mknod(P(r, "reg").c_str(), S_IFREG | 0600, 0));
    struct stat st;
    TRY(lstat(P(r, "reg").c_str(), &st));
    return S_ISREG(st.st_mode) ? 0L : 1L;
  });
}

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d))
    names.insert(e->d_name);
  closedir(d);
  return names;
}

TEST_P(PosixTest, ReaddirListsEverythingOnce) {
  for (const std::string& root : {plain_, mnt_}) {
    for (int i = 0; i < 500; i++) {
      ASSERT_GE(MakeFile(root + "/file-with-a-longish-name-" + std::to_string(i), "x"), 0);
    }
    ASSERT_EQ(mkdir((root + "/sub").c_str(), 0755), 0);
  }
  std::set<std::string> plain = List(plain_), mnt = List(mnt_);
  EXPECT_EQ(plain.size(), 503u);
  EXPECT_EQ(plain, mnt);
  // Restarting a listing after seeking back gives the same entries.
  DIR* d = opendir(mnt_.c_str());
  ASSERT_NE(d, nullptr);
  for (int i = 0; i < 100; i++)
    ASSERT_NE(readdir(d), nullptr);
  long pos = telldir(d);
  std::string at = readdir(d)->d_name;
  rewinddir(d);
  size_t count = 0;
  while (readdir(d) != nullptr)
    count++;
  EXPECT_EQ(count, 503u);
  seekdir(d, pos);
  EXPECT_EQ(std::string(readdir(d)->d_name), at);
  closedir(d);
}

TEST_P(PosixTest, Xattrs) {
  Same([](const std::string& r) { return MakeFile(P(r, "f"), "x"); });
  Same([](const std::string& r) { return setxattr(P(r, "f").c_str(), "user.a", "1", 1, 0); });
  Same([](const std::string& r) {
    return setxattr(P(r, "f").c_str(), "user.a", "2", 1, XATTR_CREATE);
  });
  Same([](const std::string& r) {
    return setxattr(P(r, "f").c_str(), "user.b", "2", 1, XATTR_REPLACE);
  });
  Same([](const std::string& r) { return setxattr(P(r, "f").c_str(), "user.b", "22", 2, 0); });
  Same([](const std::string& r) {
    char buf[8] = {};
    long n = getxattr(P(r, "f").c_str(), "user.b", buf, sizeof buf);
    return n == 2 && std::string(buf) == "22" ? n : -1L;
  });
  Same([](const std::string& r) { return getxattr(P(r, "f").c_str(), "user.b", nullptr, 0); });
  Same([](const std::string& r) {
    char buf[1];
    return getxattr(P(r, "f").c_str(), "user.b", buf, 1);
  });
  Same([](const std::string& r) { return getxattr(P(r, "f").c_str(), "user.zz", nullptr, 0); });
  Same([](const std::string& r) {
    char buf[256];
    long n = listxattr(P(r, "f").c_str(), buf, sizeof buf);
    TRY(n);
    std::set<std::string> names;
    for (long i = 0; i < n; i += static_cast<long>(strlen(buf + i)) + 1)
      names.insert(buf + i);
    return names == std::set<std::string>{"user.a", "user.b"} ? n : -2L;
  });
  Same([](const std::string& r) { return listxattr(P(r, "f").c_str(), nullptr, 0); });
  Same([](const std::string& r) {
    char buf[3];
    return listxattr(P(r, "f").c_str(), buf, sizeof buf);
  });
  Same([](const std::string& r) { return removexattr(P(r, "f").c_str(), "user.a"); });
  Same([](const std::string& r) { return removexattr(P(r, "f").c_str(), "user.a"); });
}

TEST_P(PosixTest, ControlXattrNamesAreReservedAndNeverStored) {
  ASSERT_GE(MakeFile(mnt_ + "/f", "x"), 0);
  std::string f = mnt_ + "/f";
  errno = 0;
  EXPECT_EQ(setxattr(f.c_str(), "user.ktmfs.tx.begin", "scope=galaxy", 12, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(setxattr(f.c_str(), "user.ktmfs.anything", "v", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(getxattr(f.c_str(), "user.ktmfs.tx", nullptr, 0), -1);
  EXPECT_EQ(errno, ENODATA);
  // A reserved name present on the backing file (put there behind the daemon's back) is hidden.
  ASSERT_EQ(setxattr((backing_ + "/f").c_str(), "user.ktmfs.stale", "1", 1, 0), 0);
  ASSERT_EQ(setxattr((backing_ + "/f").c_str(), "user.keep", "1", 1, 0), 0);
  char buf[256];
  long n = listxattr(f.c_str(), buf, sizeof buf);
  ASSERT_EQ(n, static_cast<long>(sizeof "user.keep"));
  EXPECT_STREQ(buf, "user.keep");
  EXPECT_EQ(listxattr(f.c_str(), nullptr, 0), n);
  EXPECT_EQ(getxattr(f.c_str(), "user.ktmfs.stale", nullptr, 0), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(removexattr(f.c_str(), "user.ktmfs.stale"), -1);
  EXPECT_EQ(errno, ENODATA);
}

long SeekDataHole(const std::string& r) {
  int fd = open(P(r, "s").c_str(), O_RDWR | O_CREAT, 0644);
  TRY(fd);
  TRY(pwrite(fd, "a", 1, 0));
  TRY(pwrite(fd, "b", 1, 4 << 20));
  TRY(fallocate(fd, 0, 8 << 20, 1 << 20));
  long hole = lseek(fd, 0, SEEK_HOLE);
  long data = lseek(fd, hole, SEEK_DATA);
  long past = lseek(fd, 64 << 20, SEEK_DATA);
  int past_err = errno;
  struct stat st;
  TRY(fstat(fd, &st));
  close(fd);
  return past == -1 && past_err == ENXIO ? hole + data * 3 + st.st_size * 7 : -2L;
}

TEST_P(PosixTest, FallocateAndSeekDataHole) {
  if (std::string(GetParam()).starts_with("writeback")) {
    // Documented in ktmfs(8): with the writeback cache the kernel answers SEEK_DATA/SEEK_HOLE
    // itself with the simple rule POSIX allows (all data, one hole at EOF).
    ASSERT_GE(SeekDataHole(plain_), 0);  // the same file, for the comparison below
    long r = SeekDataHole(mnt_);
    long size = 9 << 20;
    long hole = size, data = -1;  // SEEK_DATA at EOF: ENXIO
    EXPECT_EQ(r, hole + data * 3 + size * 7);
  } else {
    Same(SeekDataHole);
  }
  Same([](const std::string& r) {
    int fd = open(P(r, "s").c_str(), O_RDWR);
    TRY(fd);
    TRY(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
    char c = 'z';
    TRY(pread(fd, &c, 1, 0));
    close(fd);
    return static_cast<long>(c);
  });
}

TEST_P(PosixTest, CopyFileRange) {
  std::string data(300000, 'q');
  for (size_t i = 0; i < data.size(); i++)
    data[i] = static_cast<char>('a' + i % 26);
  Same([&](const std::string& r) {
    TRY(MakeFile(P(r, "src"), data));
    int in = open(P(r, "src").c_str(), O_RDONLY);
    int out = open(P(r, "dst").c_str(), O_WRONLY | O_CREAT, 0644);
    TRY(in);
    TRY(out);
    loff_t off_in = 1000, off_out = 10;
    long total = 0;
    while (total < 200000) {
      long n = copy_file_range(in, &off_in, out, &off_out, 200000 - total, 0);
      TRY(n);
      if (n == 0) break;
      total += n;
    }
    close(in);
    close(out);
    return total;
  });
  EXPECT_EQ(ReadFile(mnt_ + "/dst"), ReadFile(plain_ + "/dst"));
}

TEST_P(PosixTest, StatfsMatchesTheBackingFilesystem) {
  struct statvfs a, b;
  ASSERT_EQ(statvfs(mnt_.c_str(), &a), 0);
  ASSERT_EQ(statvfs(backing_.c_str(), &b), 0);
  EXPECT_EQ(a.f_bsize, b.f_bsize);
  EXPECT_EQ(a.f_blocks, b.f_blocks);
  EXPECT_EQ(a.f_namemax, b.f_namemax);
}

TEST_P(PosixTest, FsyncFileAndDirectory) {
  Same([](const std::string& r) {
    int fd = open(P(r, "f").c_str(), O_RDWR | O_CREAT, 0644);
    TRY(fd);
    TRY(write(fd, "x", 1));
    TRY(fsync(fd));
    TRY(fdatasync(fd));
    close(fd);
    int dfd = open(r.c_str(), O_RDONLY | O_DIRECTORY);
    TRY(dfd);
    TRY(fsync(dfd));
    close(dfd);
    return 0L;
  });
}

TEST_P(PosixTest, AccessChecks) {
  Same([](const std::string& r) { return MakeFile(P(r, "f"), "x", 0600); });
  Same([](const std::string& r) { return access(P(r, "f").c_str(), R_OK | W_OK); });
  Same([](const std::string& r) { return access(P(r, "f").c_str(), X_OK); });
  Same([](const std::string& r) { return access(P(r, "nope").c_str(), F_OK); });
}

long LockConflictFromChild(const std::string& path, bool use_flock) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  TRY(fd);
  if (use_flock) {
    TRY(flock(fd, LOCK_EX));
  } else {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 10;
    TRY(fcntl(fd, F_SETLK, &fl));
  }
  pid_t pid = fork();
  if (pid == 0) {
    int cfd = open(path.c_str(), O_RDWR);
    int r;
    if (use_flock) {
      r = flock(cfd, LOCK_EX | LOCK_NB);
    } else {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = 5;
      fl.l_len = 1;
      r = fcntl(cfd, F_SETLK, &fl);
    }
    _exit(r == 0 ? 0 : errno);
  }
  int status;
  waitpid(pid, &status, 0);
  close(fd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -3L;
}

TEST_P(PosixTest, FlockAndPosixLocksConflictAcrossProcesses) {
  auto posix = Same([](const std::string& r) { return LockConflictFromChild(P(r, "p"), false); });
  EXPECT_TRUE(posix.ret == EAGAIN || posix.ret == EACCES) << posix;
  auto fl = Same([](const std::string& r) { return LockConflictFromChild(P(r, "q"), true); });
  EXPECT_EQ(fl.ret, EWOULDBLOCK);
}

TEST_P(PosixTest, UnknownIoctlIsNotATty) {
  auto o = Same([](const std::string& r) {
    TRY(MakeFile(P(r, "f"), "x"));
    int fd = open(P(r, "f").c_str(), O_RDONLY);
    TRY(fd);
    uint64_t v = 0;
    long res = ioctl(fd, _IOR('k', 0x42, uint64_t), &v);
    int e = errno;
    close(fd);
    errno = e;
    return res;
  });
  EXPECT_EQ(o.err, ENOTTY);
  auto dir = Same([](const std::string& r) {
    int fd = open(r.c_str(), O_RDONLY | O_DIRECTORY);
    TRY(fd);
    uint32_t v = 0;
    long res = ioctl(fd, _IOW('k', 0x43, uint32_t), &v);
    int e = errno;
    close(fd);
    errno = e;
    return res;
  });
  EXPECT_EQ(dir.err, ENOTTY);
}

TEST_P(PosixTest, SharedMmapWritesReachTheFile) {
  Same([](const std::string& r) {
    int fd = open(P(r, "m").c_str(), O_RDWR | O_CREAT, 0644);
    TRY(fd);
    TRY(ftruncate(fd, 8192));
    void* p = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -1L;
    memcpy(static_cast<char*>(p) + 4096, "mapped", 6);
    TRY(msync(p, 8192, MS_SYNC));
    munmap(p, 8192);
    close(fd);
    return 0L;
  });
  EXPECT_EQ(ReadFile(backing_ + "/m").substr(4096, 6), "mapped");
}

TEST_P(PosixTest, InodesAreForgottenAndFoundAgain) {
  for (int i = 0; i < 200; i++)
    ASSERT_GE(MakeFile(mnt_ + "/f" + std::to_string(i), "x"), 0);
  // Dropping the dentry and inode caches makes the kernel send FORGET for every node.
  ASSERT_TRUE(WriteFile("/proc/sys/vm/drop_caches", "2"));
  for (int i = 0; i < 200; i++) {
    struct stat st;
    ASSERT_EQ(stat((mnt_ + "/f" + std::to_string(i)).c_str(), &st), 0);
    struct stat b;
    ASSERT_EQ(stat((backing_ + "/f" + std::to_string(i)).c_str(), &b), 0);
    EXPECT_EQ(st.st_ino, b.st_ino);
  }
}

// With negative_timeout the kernel may cache a name's absence, but never in a directory a live
// transaction changes: another task's lookup there must not hide from the transaction the name
// it created. Once committed, the name is there for everyone.
class NegativeCacheTest : public MountedTest {
 protected:
  std::vector<std::string> MountOptions() const override { return {"negative_timeout=60"}; }
};

TEST_F(NegativeCacheTest, OthersMissingANameDoesNotHideItFromTheTransaction) {
  const std::string d = mnt_ + "/d";
  ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
  std::promise<void> created, looked;
  std::future<void> looked_done = looked.get_future();
  int seen_in_tx = -1, committed = -1;
  std::thread tx([&] {
    // Names relative to a directory held from before the transaction (a shell's working
    // directory) are walked from its cached entries, without a fresh path walk.
    int dir = open(d.c_str(), O_PATH | O_DIRECTORY);
    int fd = -1;
    if (dir >= 0 && setxattr(mnt_.c_str(), "user.ktmfs.tx.begin", "scope=thread", 12, 0) == 0)
      fd = openat(dir, "x", O_WRONLY | O_CREAT | O_EXCL, 0644);
    created.set_value();
    if (fd >= 0) {
      close(fd);
      looked_done.wait();
      struct stat st;
      seen_in_tx = fstatat(dir, "x", &st, 0) == 0 ? 0 : errno;
      committed = setxattr(mnt_.c_str(), "user.ktmfs.tx.commit", "", 0, 0) == 0 ? 0 : errno;
    }
    if (dir >= 0) close(dir);
  });
  created.get_future().wait();
  struct stat st;
  EXPECT_EQ(stat((d + "/x").c_str(), &st), -1);  // outside the transaction: not there yet
  EXPECT_EQ(errno, ENOENT);
  looked.set_value();
  tx.join();
  EXPECT_EQ(seen_in_tx, 0);
  EXPECT_EQ(committed, 0);
  EXPECT_EQ(stat((d + "/x").c_str(), &st), 0);
}

}  // namespace
}  // namespace ktmfs::fs::testing

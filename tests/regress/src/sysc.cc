// sysc: runs a sequence of system calls named on the command line and prints each result as
// "OP: OK", "OP: VALUE" or "OP: ERRNONAME", so that regression tests can compare exact errno
// values without depending on the locale's strerror text.
//
//   sysc OP ARGS... [-- OP ARGS...]...
//
// Descriptors opened by "open" are kept in slots #0, #1, ... in opening order, so a sequence can
// write through a descriptor after unlinking its name, and so on. A failing call does not stop
// the sequence; the exit status is 0 unless the command line itself is wrong (2).
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

using Args = std::vector<std::string>;

std::vector<int> g_fds;  // slot -> descriptor

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "sysc: %s (see the comment at the top of sysc.cc)\n", why.c_str());
  std::exit(2);
}

std::string ErrName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

void Report(const std::string& op, int rc) {
  if (rc < 0) {
    std::printf("%s: %s\n", op.c_str(), ErrName(errno).c_str());
  } else {
    std::printf("%s: OK\n", op.c_str());
  }
}

long long Num(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str() || *end != '\0') Usage("not a number: " + s);
  return v;
}

int Fd(const std::string& s) {
  if (s.size() < 2 || s[0] != '#') Usage("expected a descriptor slot like #0: " + s);
  size_t slot = static_cast<size_t>(Num(s.substr(1)));
  if (slot >= g_fds.size()) Usage("no descriptor in slot " + s);
  return g_fds[slot];
}

// Parses "A|B|C" against a table of names.
int Flags(const std::string& s, const std::map<std::string, int>& table) {
  int v = 0;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t bar = s.find('|', pos);
    std::string name = s.substr(pos, bar == std::string::npos ? std::string::npos : bar - pos);
    if (name != "0" && !name.empty()) {
      auto it = table.find(name);
      if (it == table.end()) Usage("unknown flag: " + name);
      v |= it->second;
    }
    if (bar == std::string::npos) break;
    pos = bar + 1;
  }
  return v;
}

const std::map<std::string, int> kOpenFlags = {
    {"O_RDONLY", O_RDONLY},   {"O_WRONLY", O_WRONLY},       {"O_RDWR", O_RDWR},
    {"O_CREAT", O_CREAT},     {"O_EXCL", O_EXCL},           {"O_TRUNC", O_TRUNC},
    {"O_APPEND", O_APPEND},   {"O_DIRECTORY", O_DIRECTORY}, {"O_NOFOLLOW", O_NOFOLLOW},
    {"O_DIRECT", O_DIRECT},   {"O_SYNC", O_SYNC},           {"O_DSYNC", O_DSYNC},
    {"O_PATH", O_PATH},       {"O_NONBLOCK", O_NONBLOCK},   {"O_TMPFILE", O_TMPFILE},
    {"O_NOATIME", O_NOATIME}, {"O_CLOEXEC", O_CLOEXEC},
};

const std::map<std::string, int> kAccessModes = {
    {"F_OK", F_OK}, {"R_OK", R_OK}, {"W_OK", W_OK}, {"X_OK", X_OK}};

const std::map<std::string, int> kRenameFlags = {{"RENAME_NOREPLACE", RENAME_NOREPLACE},
                                                 {"RENAME_EXCHANGE", RENAME_EXCHANGE},
                                                 {"RENAME_WHITEOUT", RENAME_WHITEOUT}};

const std::map<std::string, int> kFallocModes = {{"KEEP_SIZE", FALLOC_FL_KEEP_SIZE},
                                                 {"PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE},
                                                 {"ZERO_RANGE", FALLOC_FL_ZERO_RANGE},
                                                 {"COLLAPSE_RANGE", FALLOC_FL_COLLAPSE_RANGE},
                                                 {"INSERT_RANGE", FALLOC_FL_INSERT_RANGE}};

const std::map<std::string, int> kXattrFlags = {{"XATTR_CREATE", XATTR_CREATE},
                                                {"XATTR_REPLACE", XATTR_REPLACE}};

const std::map<std::string, int> kFlockOps = {
    {"LOCK_SH", LOCK_SH}, {"LOCK_EX", LOCK_EX}, {"LOCK_UN", LOCK_UN}, {"LOCK_NB", LOCK_NB}};

const char* TypeName(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "regular";
    case S_IFDIR:
      return "directory";
    case S_IFLNK:
      return "symlink";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "chardev";
    case S_IFBLK:
      return "blockdev";
  }
  return "unknown";
}

// Prints one field of a stat result; the fields are the stable ones a test may compare.
std::string Field(const struct stat& st, const std::string& f) {
  char buf[64];
  if (f == "size") return std::to_string(st.st_size);
  if (f == "nlink") return std::to_string(st.st_nlink);
  if (f == "uid") return std::to_string(st.st_uid);
  if (f == "gid") return std::to_string(st.st_gid);
  if (f == "type") return TypeName(st.st_mode);
  if (f == "blocks") return std::to_string(st.st_blocks);
  if (f == "mode") {
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return buf;
  }
  Usage("unknown stat field: " + f);
}

// Printable form of data read from a file: bytes outside printable ASCII become \xNN.
std::string Printable(const char* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out;
}

void Need(const Args& a, size_t lo, size_t hi = 0) {
  if (a.size() - 1 < lo || a.size() - 1 > (hi ? hi : lo)) Usage("wrong argument count for " + a[0]);
}

// readdir-concurrent DIR: reads DIR while names are added and removed half way, and checks what
// POSIX promises: every name that existed throughout is returned exactly once, no name is
// returned twice, and no name appears that never existed. Expects the test to have created
// DIR/keep.N and DIR/gone.N; creates DIR/new.N.
void ReaddirConcurrent(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) {
    std::printf("readdir-concurrent: opendir %s\n", ErrName(errno).c_str());
    return;
  }
  std::set<std::string> before;
  for (dirent* e; (e = readdir(d));)
    before.insert(e->d_name);
  rewinddir(d);
  std::map<std::string, int> seen;
  size_t half = before.size() / 2, n = 0;
  bool changed = false;
  std::set<std::string> created;
  for (;;) {
    errno = 0;
    dirent* e = readdir(d);
    if (!e) break;
    ++seen[e->d_name];
    if (++n == half && !changed) {
      changed = true;
      for (const auto& name : before) {
        if (name.rfind("gone.", 0) == 0) {
          if (unlinkat(dirfd(d), name.c_str(), 0) < 0)
            std::printf("unlink %s failed\n", name.c_str());
        }
      }
      for (int i = 0; i < 64; ++i) {
        std::string name = "new." + std::to_string(i);
        int fd = openat(dirfd(d), name.c_str(), O_CREAT | O_WRONLY, 0644);
        if (fd < 0)
          std::printf("create %s failed\n", name.c_str());
        else
          close(fd);
        created.insert(name);
      }
    }
  }
  if (errno != 0) std::printf("readdir-concurrent: readdir %s\n", ErrName(errno).c_str());
  int missing = 0, twice = 0, unknown = 0;
  for (const auto& name : before) {
    bool stable = name.rfind("gone.", 0) != 0;
    if (stable && seen[name] != 1) ++missing;
  }
  for (const auto& [name, count] : seen) {
    if (count > 1) ++twice;
    if (!before.count(name) && !created.count(name)) ++unknown;
  }
  std::printf("readdir-concurrent: stable names not seen exactly once: %d\n", missing);
  std::printf("readdir-concurrent: names seen twice: %d\n", twice);
  std::printf("readdir-concurrent: names that never existed: %d\n", unknown);
  // After rewinddir the stream must show the directory as it is now, exactly.
  rewinddir(d);
  std::set<std::string> now;
  for (dirent* e; (e = readdir(d));)
    now.insert(e->d_name);
  std::set<std::string> expect;
  for (const auto& name : before) {
    if (name.rfind("gone.", 0) != 0) expect.insert(name);
  }
  expect.insert(created.begin(), created.end());
  std::printf("readdir-concurrent: after rewinddir the listing is %s\n",
              now == expect ? "exact" : "WRONG");
  closedir(d);
}

// readdir-seek DIR: telldir/seekdir must bring a directory stream back to where it was: for
// several saved positions, the entries read after seekdir are the ones first read after telldir.
void ReaddirSeek(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) {
    std::printf("readdir-seek: opendir %s\n", ErrName(errno).c_str());
    return;
  }
  std::vector<long> positions;
  std::vector<std::string> names;
  for (;;) {
    positions.push_back(telldir(d));
    dirent* e = readdir(d);
    if (!e) break;
    names.push_back(e->d_name);
  }
  int bad = 0, checked = 0;
  for (size_t i = 0; i < names.size(); i += 37) {
    seekdir(d, positions[i]);
    for (size_t j = i; j < names.size() && j < i + 5; ++j) {
      dirent* e = readdir(d);
      if (!e || names[j] != e->d_name) ++bad;
    }
    ++checked;
  }
  std::printf("readdir-seek: %s after seekdir to %s saved positions\n",
              bad == 0 ? "the same entries" : "DIFFERENT entries", checked > 1 ? "several" : "one");
  closedir(d);
}

// statvfs PATH: the stable facts about the filesystem's numbers, not the numbers.
void Statvfs(const std::string& path) {
  struct statvfs sv;
  if (statvfs(path.c_str(), &sv) < 0) {
    std::printf("statvfs: %s\n", ErrName(errno).c_str());
    return;
  }
  std::printf("statvfs: block size positive: %s\n", sv.f_bsize > 0 ? "yes" : "no");
  std::printf("statvfs: blocks positive: %s\n", sv.f_blocks > 0 ? "yes" : "no");
  std::printf("statvfs: free <= total: %s\n", sv.f_bfree <= sv.f_blocks ? "yes" : "no");
  std::printf("statvfs: available <= free: %s\n", sv.f_bavail <= sv.f_bfree ? "yes" : "no");
  std::printf("statvfs: name length limit: %lu\n", static_cast<unsigned long>(sv.f_namemax));
}

using Op = std::function<void(const Args&)>;

const std::map<std::string, Op>& Ops() {
  static const std::map<std::string, Op> ops = {
      {"open",
       [](const Args& a) {
         Need(a, 2, 3);
         mode_t mode = a.size() > 3 ? static_cast<mode_t>(Num(a[3])) : 0644;
         int fd = open(a[1].c_str(), Flags(a[2], kOpenFlags), mode);
         if (fd >= 0) {
           g_fds.push_back(fd);
           std::printf("open: OK #%zu\n", g_fds.size() - 1);
         } else {
           g_fds.push_back(-1);
           std::printf("open: %s\n", ErrName(errno).c_str());
         }
       }},
      {"close",
       [](const Args& a) {
         Need(a, 1);
         Report("close", close(Fd(a[1])));
       }},
      {"write",
       [](const Args& a) {
         Need(a, 2);
         ssize_t n = write(Fd(a[1]), a[2].data(), a[2].size());
         if (n < 0)
           Report("write", -1);
         else
           std::printf("write: %zd\n", n);
       }},
      {"pwrite",
       [](const Args& a) {
         Need(a, 3);
         ssize_t n = pwrite(Fd(a[1]), a[3].data(), a[3].size(), Num(a[2]));
         if (n < 0)
           Report("pwrite", -1);
         else
           std::printf("pwrite: %zd\n", n);
       }},
      {"read",
       [](const Args& a) {
         Need(a, 2);
         std::vector<char> buf(static_cast<size_t>(Num(a[2])));
         ssize_t n = read(Fd(a[1]), buf.data(), buf.size());
         if (n < 0)
           Report("read", -1);
         else
           std::printf("read: %zd '%s'\n", n, Printable(buf.data(), n).c_str());
       }},
      {"pread",
       [](const Args& a) {
         Need(a, 3);
         std::vector<char> buf(static_cast<size_t>(Num(a[3])));
         ssize_t n = pread(Fd(a[1]), buf.data(), buf.size(), Num(a[2]));
         if (n < 0)
           Report("pread", -1);
         else
           std::printf("pread: %zd '%s'\n", n, Printable(buf.data(), n).c_str());
       }},
      {"lseek",
       [](const Args& a) {
         Need(a, 3);
         static const std::map<std::string, int> whence = {{"SEEK_SET", SEEK_SET},
                                                           {"SEEK_CUR", SEEK_CUR},
                                                           {"SEEK_END", SEEK_END},
                                                           {"SEEK_DATA", SEEK_DATA},
                                                           {"SEEK_HOLE", SEEK_HOLE}};
         off_t r = lseek(Fd(a[1]), Num(a[2]), Flags(a[3], whence));
         if (r < 0)
           Report("lseek", -1);
         else
           std::printf("lseek: %lld\n", static_cast<long long>(r));
       }},
      {"fsync",
       [](const Args& a) {
         Need(a, 1);
         Report("fsync", fsync(Fd(a[1])));
       }},
      {"fdatasync",
       [](const Args& a) {
         Need(a, 1);
         Report("fdatasync", fdatasync(Fd(a[1])));
       }},
      {"ftruncate",
       [](const Args& a) {
         Need(a, 2);
         Report("ftruncate", ftruncate(Fd(a[1]), Num(a[2])));
       }},
      {"truncate",
       [](const Args& a) {
         Need(a, 2);
         Report("truncate", truncate(a[1].c_str(), Num(a[2])));
       }},
      {"fallocate",
       [](const Args& a) {
         Need(a, 4);
         Report("fallocate", fallocate(Fd(a[1]), Flags(a[2], kFallocModes), Num(a[3]), Num(a[4])));
       }},
      {"flock",
       [](const Args& a) {
         Need(a, 2);
         Report("flock", flock(Fd(a[1]), Flags(a[2], kFlockOps)));
       }},
      {"fstat",
       [](const Args& a) {
         Need(a, 2);
         struct stat st;
         if (fstat(Fd(a[1]), &st) < 0)
           Report("fstat", -1);
         else
           std::printf("fstat %s: %s\n", a[2].c_str(), Field(st, a[2]).c_str());
       }},
      {"stat",
       [](const Args& a) {
         Need(a, 2);
         struct stat st;
         if (stat(a[1].c_str(), &st) < 0)
           Report("stat", -1);
         else
           std::printf("stat %s: %s\n", a[2].c_str(), Field(st, a[2]).c_str());
       }},
      {"lstat",
       [](const Args& a) {
         Need(a, 2);
         struct stat st;
         if (lstat(a[1].c_str(), &st) < 0)
           Report("lstat", -1);
         else
           std::printf("lstat %s: %s\n", a[2].c_str(), Field(st, a[2]).c_str());
       }},
      {"access",
       [](const Args& a) {
         Need(a, 2);
         Report("access", access(a[1].c_str(), Flags(a[2], kAccessModes)));
       }},
      {"rename",
       [](const Args& a) {
         Need(a, 2, 3);
         int flags = a.size() > 3 ? Flags(a[3], kRenameFlags) : 0;
         Report("rename", renameat2(AT_FDCWD, a[1].c_str(), AT_FDCWD, a[2].c_str(), flags));
       }},
      {"link",
       [](const Args& a) {
         Need(a, 2);
         Report("link", link(a[1].c_str(), a[2].c_str()));
       }},
      {"symlink",
       [](const Args& a) {
         Need(a, 2);
         Report("symlink", symlink(a[1].c_str(), a[2].c_str()));
       }},
      {"readlink",
       [](const Args& a) {
         Need(a, 1);
         char buf[4096];
         ssize_t n = readlink(a[1].c_str(), buf, sizeof buf);
         if (n < 0)
           Report("readlink", -1);
         else
           std::printf("readlink: '%s'\n", Printable(buf, n).c_str());
       }},
      {"unlink",
       [](const Args& a) {
         Need(a, 1);
         Report("unlink", unlink(a[1].c_str()));
       }},
      {"rmdir",
       [](const Args& a) {
         Need(a, 1);
         Report("rmdir", rmdir(a[1].c_str()));
       }},
      {"mkdir",
       [](const Args& a) {
         Need(a, 1, 2);
         mode_t mode = a.size() > 2 ? static_cast<mode_t>(Num(a[2])) : 0755;
         Report("mkdir", mkdir(a[1].c_str(), mode));
       }},
      {"mkfifo",
       [](const Args& a) {
         Need(a, 1, 2);
         mode_t mode = a.size() > 2 ? static_cast<mode_t>(Num(a[2])) : 0644;
         Report("mknod", mknod(a[1].c_str(), S_IFIFO | mode, 0));
       }},
      {"mknod-chr",
       [](const Args& a) {
         Need(a, 3);
         Report("mknod",
                mknod(a[1].c_str(), S_IFCHR | 0644,
                      makedev(static_cast<unsigned>(Num(a[2])), static_cast<unsigned>(Num(a[3])))));
       }},
      {"chmod",
       [](const Args& a) {
         Need(a, 2);
         Report("chmod", chmod(a[1].c_str(), static_cast<mode_t>(Num(a[2]))));
       }},
      {"chown",
       [](const Args& a) {
         Need(a, 3);
         Report("chown",
                chown(a[1].c_str(), static_cast<uid_t>(Num(a[2])), static_cast<gid_t>(Num(a[3]))));
       }},
      {"lchown",
       [](const Args& a) {
         Need(a, 3);
         Report("lchown",
                lchown(a[1].c_str(), static_cast<uid_t>(Num(a[2])), static_cast<gid_t>(Num(a[3]))));
       }},
      {"utime-now",
       [](const Args& a) {
         Need(a, 1);
         Report("utimensat", utimensat(AT_FDCWD, a[1].c_str(), nullptr, 0));
       }},
      {"utime",
       [](const Args& a) {
         // utime PATH ATIME MTIME: seconds, or "now" / "omit".
         Need(a, 3);
         struct timespec ts[2];
         for (int i = 0; i < 2; ++i) {
           const std::string& v = a[2 + i];
           if (v == "now")
             ts[i] = {0, UTIME_NOW};
           else if (v == "omit")
             ts[i] = {0, UTIME_OMIT};
           else
             ts[i] = {static_cast<time_t>(Num(v)), 0};
         }
         Report("utimensat", utimensat(AT_FDCWD, a[1].c_str(), ts, 0));
       }},
      {"setxattr",
       [](const Args& a) {
         Need(a, 3, 4);
         int flags = a.size() > 4 ? Flags(a[4], kXattrFlags) : 0;
         Report("setxattr", setxattr(a[1].c_str(), a[2].c_str(), a[3].data(), a[3].size(), flags));
       }},
      {"lsetxattr",
       [](const Args& a) {
         Need(a, 3);
         Report("lsetxattr", lsetxattr(a[1].c_str(), a[2].c_str(), a[3].data(), a[3].size(), 0));
       }},
      {"getxattr",
       [](const Args& a) {
         Need(a, 2);
         char buf[65536];
         ssize_t n = getxattr(a[1].c_str(), a[2].c_str(), buf, sizeof buf);
         if (n < 0)
           Report("getxattr", -1);
         else
           std::printf("getxattr: '%s'\n", Printable(buf, n).c_str());
       }},
      {"getxattr-size",
       [](const Args& a) {
         // The size query (buffer size 0), and then a too small buffer, which must be ERANGE.
         Need(a, 2);
         ssize_t n = getxattr(a[1].c_str(), a[2].c_str(), nullptr, 0);
         if (n < 0) {
           Report("getxattr-size", -1);
           return;
         }
         std::printf("getxattr-size: %zd\n", n);
         if (n > 0) {
           std::vector<char> small(static_cast<size_t>(n - 1));
           Report("getxattr-small",
                  getxattr(a[1].c_str(), a[2].c_str(), small.data(), small.size()));
         }
       }},
      {"listxattr",
       [](const Args& a) {
         // Prints the names sorted (the order is not specified); names under security.* and
         // system.* are left out, since which of them exist depends on the host (SELinux, ACLs).
         Need(a, 1);
         char buf[65536];
         ssize_t n = listxattr(a[1].c_str(), buf, sizeof buf);
         if (n < 0) {
           Report("listxattr", -1);
           return;
         }
         std::set<std::string> names;
         for (ssize_t i = 0; i < n;) {
           std::string name(buf + i);
           i += static_cast<ssize_t>(name.size()) + 1;
           if (name.rfind("security.", 0) != 0 && name.rfind("system.", 0) != 0) names.insert(name);
         }
         std::string all;
         for (const auto& name : names)
           all += (all.empty() ? "" : " ") + name;
         std::printf("listxattr: [%s]\n", all.c_str());
       }},
      {"removexattr",
       [](const Args& a) {
         Need(a, 2);
         Report("removexattr", removexattr(a[1].c_str(), a[2].c_str()));
       }},
      {"times",
       [](const Args& a) {
         // Prints atime, mtime and ctime of PATH (not following a symlink) in nanoseconds, for
         // tests that compare them before and after an operation.
         Need(a, 1);
         struct stat st;
         if (lstat(a[1].c_str(), &st) < 0) {
           Report("times", -1);
           return;
         }
         auto ns = [](const timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; };
         std::printf("%lld %lld %lld\n", ns(st.st_atim), ns(st.st_mtim), ns(st.st_ctim));
       }},
      {"tick",
       [](const Args& a) {
         // Waits until the clock the kernel stamps files with has moved past every timestamp of
         // PATH, so that a following change is guaranteed a later time. A wait on a condition,
         // bounded at 10 s, not a guess at a duration.
         Need(a, 1);
         struct stat st;
         if (lstat(a[1].c_str(), &st) < 0) {
           Report("tick", -1);
           return;
         }
         auto ns = [](const timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; };
         long long newest = std::max({ns(st.st_atim), ns(st.st_mtim), ns(st.st_ctim)});
         for (int i = 0; i < 10000; ++i) {
           timespec now;
           clock_gettime(CLOCK_REALTIME_COARSE, &now);
           if (ns(now) > newest) return;
           timespec pause = {0, 1000000};
           nanosleep(&pause, nullptr);
         }
         std::printf("tick: the clock did not pass the file's timestamps in 10 s\n");
       }},
      {"readdir-seek",
       [](const Args& a) {
         Need(a, 1);
         ReaddirSeek(a[1]);
       }},
      {"statvfs",
       [](const Args& a) {
         Need(a, 1);
         Statvfs(a[1]);
       }},
      {"readdir-concurrent",
       [](const Args& a) {
         Need(a, 1);
         ReaddirConcurrent(a[1]);
       }},
      {"name_to_handle",
       [](const Args& a) {
         // name_to_handle PATH FILE: PATH's file handle, kept in FILE for open_by_handle in a
         // later run (after a cache drop, say).
         Need(a, 2);
         std::vector<char> buf(sizeof(file_handle) + MAX_HANDLE_SZ);
         auto* fh = reinterpret_cast<file_handle*>(buf.data());
         fh->handle_bytes = MAX_HANDLE_SZ;
         int mount_id = 0;
         if (name_to_handle_at(AT_FDCWD, a[1].c_str(), fh, &mount_id, 0) < 0) {
           Report("name_to_handle", -1);
           return;
         }
         FILE* out = std::fopen(a[2].c_str(), "wb");
         size_t size = sizeof(file_handle) + fh->handle_bytes;
         bool ok = out && std::fwrite(buf.data(), 1, size, out) == size;
         if (out) ok = std::fclose(out) == 0 && ok;
         if (!ok) Usage("cannot write " + a[2]);
         std::printf("name_to_handle: OK\n");
       }},
      {"open_by_handle",
       [](const Args& a) {
         // open_by_handle MOUNTDIR FILE FLAGS: opens the handle kept in FILE, on the filesystem
         // mounted at MOUNTDIR; the descriptor takes the next slot, as open's do.
         Need(a, 3);
         std::vector<char> buf(sizeof(file_handle) + MAX_HANDLE_SZ);
         FILE* in = std::fopen(a[2].c_str(), "rb");
         if (!in) Usage("cannot read " + a[2]);
         size_t got = std::fread(buf.data(), 1, buf.size(), in);
         std::fclose(in);
         auto* fh = reinterpret_cast<file_handle*>(buf.data());
         if (got < sizeof(file_handle) || got != sizeof(file_handle) + fh->handle_bytes)
           Usage("not a file handle: " + a[2]);
         int mount_fd = open(a[1].c_str(), O_RDONLY | O_DIRECTORY);
         if (mount_fd < 0) Usage("cannot open " + a[1]);
         int fd = open_by_handle_at(mount_fd, fh, Flags(a[3], kOpenFlags));
         int err = errno;
         close(mount_fd);
         g_fds.push_back(fd);
         if (fd >= 0) {
           std::printf("open_by_handle: OK #%zu\n", g_fds.size() - 1);
         } else {
           std::printf("open_by_handle: %s\n", ErrName(err).c_str());
         }
       }},
      {"drop_caches",
       [](const Args& a) {
         // Drops the kernel's unused dentries and inodes (root only): a FUSE filesystem then
         // gets FORGET for every node no one holds.
         Need(a, 0);
         int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
         int rc = fd < 0 ? -1 : static_cast<int>(write(fd, "2", 1));
         if (fd >= 0) close(fd);
         Report("drop_caches", rc < 0 ? -1 : 0);
       }},
      {"copy_file_range",
       [](const Args& a) {
         // copy_file_range #IN OFF_IN #OUT OFF_OUT LEN
         Need(a, 5);
         loff_t in = Num(a[2]), out = Num(a[4]);
         ssize_t n =
             copy_file_range(Fd(a[1]), &in, Fd(a[3]), &out, static_cast<size_t>(Num(a[5])), 0);
         if (n < 0)
           Report("copy_file_range", -1);
         else
           std::printf("copy_file_range: %zd\n", n);
       }},
  };
  return ops;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) Usage("no operation");
  Args cur;
  std::vector<Args> seq;
  for (int i = 1; i <= argc; ++i) {
    if (i == argc || std::strcmp(argv[i], "--") == 0) {
      if (cur.empty()) Usage("empty operation");
      seq.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(argv[i]);
    }
  }
  for (const auto& a : seq) {
    auto it = Ops().find(a[0]);
    if (it == Ops().end()) Usage("unknown operation: " + a[0]);
  }
  for (const auto& a : seq)
    Ops().at(a[0])(a);
  return 0;
}

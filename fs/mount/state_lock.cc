#include "fs/mount/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ktmfs::fs {
namespace {

std::string ErrorText(int err) {
  return std::strerror(err);
}

// The pid a lock file names, or 0 if it names none (a holder between lock and write).
pid_t ReadPid(int fd) {
  char buf[32] = {};
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  long pid = std::strtol(buf, nullptr, 10);
  return pid > 0 ? static_cast<pid_t>(pid) : 0;
}

std::string HolderText(pid_t pid) {
  return pid > 0 ? "held by pid " + std::to_string(pid) : "held by another process";
}

// /proc/locks names the process that took a flock; the kernel keeps no other record of it.
pid_t FlockHolder(const struct stat& st) {
  std::ifstream in("/proc/locks");
  std::string line;
  char want[64];
  std::snprintf(want, sizeof want, "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  while (std::getline(in, line)) {
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters are marked "->".
    std::istringstream f(line);
    std::string id, kind, mode, type, pid, file;
    if (!(f >> id >> kind >> mode >> type >> pid >> file)) continue;
    if (kind == "FLOCK" && file == want) return static_cast<pid_t>(std::atol(pid.c_str()));
  }
  return 0;
}

struct flock WholeFile(short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  return fl;
}

}  // namespace

DirLock& DirLock::operator=(DirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) close(fd_);
}

Result<DirLock> DirLock::LockStateDir(const std::string& dir, const std::string& mountpoint) {
  const std::string path = dir + "/" + kStateLockFileName;
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::Error(errno, "lock file " + path + ": " + ErrorText(errno));
  DirLock lock(fd);
  // An OFD lock belongs to the open file, not to the process: it survives the daemon's fork
  // into the background and goes only with the last descriptor.
  struct flock fl = WholeFile(F_WRLCK);
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno == EAGAIN || errno == EACCES) {
      return Status::Busy("state directory " + dir + " is in use by another ktmfs daemon (" + path +
                          " " + HolderText(ReadPid(fd)) + ")");
    }
    return Status::Error(errno, "lock file " + path + ": " + ErrorText(errno));
  }
  const std::string pid =
      std::to_string(getpid()) + "\n" + (mountpoint.empty() ? "" : mountpoint + "\n");
  // Written over what is there, then cut to length: on ext4 that needs no new block once the
  // file has one, so a full filesystem (or quota) still lets the mount come up. The text only
  // names the holder for messages (the lock is the OFD lock): one that gets no room is cut to
  // nothing (names nobody, messages say "held by another process"), and the mount goes on.
  const ssize_t n = pwrite(fd, pid.data(), pid.size(), 0);
  if (n < 0 && errno != ENOSPC && errno != EDQUOT)
    return Status::Error(errno, "lock file " + path + ": " + ErrorText(errno));
  if (n != static_cast<ssize_t>(pid.size())) {
    (void)ftruncate(fd, 0);
  } else if (ftruncate(fd, n) != 0) {
    return Status::Error(errno, "lock file " + path + ": " + ErrorText(errno));
  }
  return lock;
}

Result<DirLock> DirLock::LockSource(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "source " + dir + ": " + ErrorText(errno));
  DirLock lock(fd);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      struct stat st;
      pid_t holder = fstat(fd, &st) == 0 ? FlockHolder(st) : 0;
      return Status::Busy("source " + dir + " is served by another ktmfs daemon (its lock is " +
                          HolderText(holder) + ")");
    }
    return Status::Error(errno, "locking source " + dir + ": " + ErrorText(errno));
  }
  return lock;
}

std::optional<pid_t> StateDirLockHolder(const std::string& dir) {
  int fd = open((dir + "/" + kStateLockFileName).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  // F_OFD_GETLK only asks: it takes nothing, so a daemon starting now is not turned away.
  struct flock fl = WholeFile(F_RDLCK);
  std::optional<pid_t> holder;
  if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) holder = ReadPid(fd);
  close(fd);
  return holder;
}

std::optional<std::string> StateDirLockMountpoint(const std::string& dir) {
  std::ifstream in(dir + "/" + kStateLockFileName);
  std::string pid, mountpoint;
  if (!std::getline(in, pid) || !std::getline(in, mountpoint) || mountpoint.empty())
    return std::nullopt;
  return mountpoint;
}

Result<std::vector<DirLock>> LockMount(const std::vector<std::string>& state_dirs,
                                       const std::vector<std::string>& sources,
                                       const std::string& mountpoint) {
  std::vector<DirLock> locks;
  for (const std::string& d : state_dirs) {
    auto l = DirLock::LockStateDir(d, mountpoint);
    if (!l.ok()) return l.status();
    locks.push_back(std::move(*l));
  }
  for (const std::string& s : sources) {
    auto l = DirLock::LockSource(s);
    if (!l.ok()) return l.status();
    locks.push_back(std::move(*l));
  }
  return locks;
}

}  // namespace ktmfs::fs

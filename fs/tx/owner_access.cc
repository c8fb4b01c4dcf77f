#include "fs/tx/owner_access.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>

#include "fs/tx/beneath.h"

namespace ktmfs::fstx {

namespace {

// The object at `path` (not followed) opened with `flags` if it is a regular file or a
// directory, through an O_PATH descriptor of it, so that what is opened is what was checked.
int OpenFileOrDirectory(const std::string& path, int flags) {
  const int at = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (at < 0) return -1;
  struct stat st;
  int fd = -1;
  if (::fstat(at, &st) == 0) {
    if (S_ISLNK(st.st_mode))
      errno = ELOOP;  // as open(2) with O_NOFOLLOW says
    else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
      errno = ESTALE;
    else  // through the descriptor's magic link, which O_NOFOLLOW (applied above) would refuse
      fd = ::open(FdPath(at).c_str(), (flags & ~O_NOFOLLOW) | O_CLOEXEC);
  }
  const int err = errno;
  ::close(at);
  errno = err;
  return fd;
}

}  // namespace

int OpenAsOwner(const std::string& path, int flags) {
  flags |= O_NOFOLLOW | O_CLOEXEC;
  int fd = OpenFileOrDirectory(path, flags);
  if (fd >= 0 || errno != EACCES) return fd;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || S_ISLNK(st.st_mode) || st.st_uid != ::geteuid()) {
    errno = EACCES;
    return -1;
  }
  const int access = flags & O_ACCMODE;
  const mode_t need = access == O_RDONLY   ? S_IRUSR
                      : access == O_WRONLY ? S_IWUSR
                                           : S_IRUSR | S_IWUSR;
  const mode_t mode = st.st_mode & 07777;
  if ((mode & need) == need || ::chmod(path.c_str(), mode | need) != 0) {
    errno = EACCES;  // not the mode bits' doing, or not ours to change
    return -1;
  }
  fd = OpenFileOrDirectory(path, flags);
  const int err = errno;
  // The mode the transaction gave it; a re-run of apply sets it again anyway.
  if (fd >= 0 ? ::fchmod(fd, mode) != 0 : ::chmod(path.c_str(), mode) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  errno = err;
  return fd;
}

namespace {

// Runs call(); on EACCES, if the daemon owns the object, runs it again with S_IWUSR granted for
// the moment, then puts the mode back.
template <typename Call>
int WithOwnerWrite(const std::string& path, Call call) {
  if (call() == 0) return 0;
  if (errno != EACCES) return -1;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || S_ISLNK(st.st_mode) || st.st_uid != ::geteuid()) {
    errno = EACCES;
    return -1;
  }
  const mode_t mode = st.st_mode & 07777;
  if ((mode & S_IWUSR) != 0 || ::chmod(path.c_str(), mode | S_IWUSR) != 0) {
    errno = EACCES;
    return -1;
  }
  const int rc = call();
  const int err = errno;
  if (::chmod(path.c_str(), mode) != 0) return -1;
  errno = err;
  return rc == 0 ? 0 : -1;
}

}  // namespace

int SetXattrAsOwner(const std::string& path, const std::string& name, const std::string& value) {
  return WithOwnerWrite(path, [&] {
    errno = 0;
    return ::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0);
  });
}

int RemoveXattrAsOwner(const std::string& path, const std::string& name) {
  return WithOwnerWrite(path, [&] {
    errno = 0;
    return ::lremovexattr(path.c_str(), name.c_str());
  });
}

}  // namespace ktmfs::fstx

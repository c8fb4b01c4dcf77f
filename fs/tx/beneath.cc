#include "fs/tx/beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ktmfs::fstx {

std::string FdPath(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

BackingName BackingName::Resolve(int root_fd, const std::string& root, const std::string& rel) {
  BackingName n;
  n.shown_ = rel.empty() ? root : root + "/" + rel;
  const size_t slash = rel.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : rel.substr(0, slash);
  n.leaf_ = slash == std::string::npos ? rel : rel.substr(slash + 1);
  if (root_fd < 0) {
    n.error_ = EBADF;
  } else if (n.leaf_.empty() || n.leaf_ == "." || n.leaf_ == ".." || rel.front() == '/') {
    n.error_ = EINVAL;  // the root itself, or not a name below it: apply never names those
  } else {
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd = ::syscall(SYS_openat2, root_fd, dir.c_str(), &how, sizeof how);
    if (fd < 0) {
      n.error_ = errno;
    } else {
      n.dir_fd_ = static_cast<int>(fd);
      n.path_ = FdPath(n.dir_fd_) + "/" + n.leaf_;
    }
  }
  // A path no call can use: the error is reported by error(), and a call that ignores it
  // fails with ENOENT rather than acting somewhere else.
  if (n.dir_fd_ < 0) n.path_ = "/proc/self/fd/-1/" + n.leaf_;
  return n;
}

BackingName BackingName::Trusted(const std::string& path) {
  BackingName n;
  n.path_ = path;
  n.shown_ = path;
  return n;
}

BackingName::BackingName(BackingName&& other) noexcept
    : dir_fd_(other.dir_fd_),
      error_(other.error_),
      leaf_(std::move(other.leaf_)),
      path_(std::move(other.path_)),
      shown_(std::move(other.shown_)) {
  other.dir_fd_ = -1;
}

BackingName::~BackingName() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

std::string UnreachableReason(int err) {
  if (err == ELOOP) return "a symlink on the way, which apply does not follow";
  if (err == EXDEV) return "the path leads out of the backing directory";
  return std::strerror(err);
}

Status BackingName::ErrorStatus(const std::string& what) const {
  return Status::Error(error_, what + " " + shown_ + ": " + UnreachableReason(error_));
}

int BackingName::ChmodNoFollow(unsigned mode) const {
  if (error_ != 0) {
    errno = error_;
    return -1;
  }
  const int dir = dir_fd_ >= 0 ? dir_fd_ : AT_FDCWD;
  const char* name = dir_fd_ >= 0 ? leaf_.c_str() : path_.c_str();
  int fd = ::openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  int rc = ::fstat(fd, &st);
  // chmod through the descriptor's /proc link acts on the inode it holds, not on whatever
  // the name leads to now (fchmod refuses O_PATH descriptors).
  if (rc == 0 && !S_ISLNK(st.st_mode)) rc = ::chmod(FdPath(fd).c_str(), mode);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return rc;
}

BackingRoot::BackingRoot(const std::string& root) : root_(root) {
  fd_ = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
}

BackingRoot::~BackingRoot() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace ktmfs::fstx

#include "fs/tx/value_file.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

namespace ktmfs::fstx {

Result<StoredValue> ValueFile::Store(int dir_fd, const std::string& dir, std::string_view value) {
  const std::string path = dir + "/" + kValueFileName;
  std::lock_guard lock(mu_);
  const int fd =
      ::openat(dir_fd, kValueFileName, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("open " + path);
  size_t done = 0;
  while (done < value.size()) {
    const ssize_t n =
        ::pwrite(fd, value.data() + done, value.size() - done, static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : EIO;
      ::close(fd);
      // What was written of it is left past end_, for the next value to overwrite.
      return Status::FromErrno(
          e, "storing an xattr value of " + std::to_string(value.size()) + " bytes in " + path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  StoredValue at;
  at.offset = end_;
  at.size = static_cast<uint32_t>(value.size());
  end_ += value.size();
  return at;
}

void ValueFile::Drop(int dir_fd, const StoredValue& at) {
  std::lock_guard lock(mu_);
  if (at.offset + at.size != end_) return;
  const int fd = ::openat(dir_fd, kValueFileName, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  if (::ftruncate(fd, static_cast<off_t>(at.offset)) == 0) end_ = at.offset;
  ::close(fd);
}

Result<std::string> ReadStoredValue(const std::string& staging_dir, const StoredValue& at) {
  const std::string path = staging_dir + "/" + kValueFileName;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path);
  std::string value(at.size, '\0');
  size_t done = 0;
  while (done < value.size()) {
    const ssize_t n =
        ::pread(fd, value.data() + done, value.size() - done, static_cast<off_t>(at.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return Status::FromErrno(e, "read " + path);
    }
    if (n == 0) {
      ::close(fd);
      return Status::Error(EIO, path + " ends before the xattr value at offset " +
                                    std::to_string(at.offset) + " (" + std::to_string(at.size) +
                                    " bytes)");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return value;
}

}  // namespace ktmfs::fstx

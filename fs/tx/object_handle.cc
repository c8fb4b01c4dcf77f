#include "fs/tx/object_handle.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace ktmfs::fstx {

namespace {

constexpr int kMemoryRetries = 50;
constexpr useconds_t kMemoryRetryMicros = 2000;

// struct file_handle ends in a flexible array: room for the largest handle any filesystem gives.
struct HandleBuffer {
  alignas(struct file_handle) unsigned char storage[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  struct file_handle* get() {
    return reinterpret_cast<struct file_handle*>(storage);
  }
};

}  // namespace

std::optional<ObjectHandle> ObjectHandle::Of(int fd) {
  return Taken(fd, "", AT_EMPTY_PATH);
}

std::optional<ObjectHandle> ObjectHandle::At(const char* path) {
  return Taken(AT_FDCWD, path, 0);
}

std::optional<ObjectHandle> ObjectHandle::Taken(int dirfd, const char* path, int flags) {
  HandleBuffer buf;
  struct file_handle* fh = buf.get();
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(dirfd, path, fh, &mount_id, flags) != 0) return std::nullopt;
  ObjectHandle h;
  h.mount_id_ = mount_id;
  h.type_ = fh->handle_type;
  h.bytes_.assign(fh->f_handle, fh->f_handle + fh->handle_bytes);
  return h;
}

int ObjectHandle::Open(int mount_fd, int flags) const {
  HandleBuffer buf;
  struct file_handle* fh = buf.get();
  fh->handle_type = type_;
  fh->handle_bytes = static_cast<unsigned>(bytes_.size());
  std::memcpy(fh->f_handle, bytes_.data(), bytes_.size());
  // setfsuid returns the identity it replaces; back at the daemon's, the capabilities a caller's
  // identity cleared from the effective set come back from the permitted one.
  const auto daemon_uid = static_cast<uid_t>(geteuid());
  const auto previous = static_cast<uid_t>(syscall(SYS_setfsuid, daemon_uid));
  int fd = open_by_handle_at(mount_fd, fh, flags);
  // ext4 (Linux 6.18) answers ENOMEM, not ESTALE, for an inode it is still freeing: measured,
  // 1-3% of such opens right after the last unlink, with two processes at it; mostly 2 ms later,
  // under load (ASan, parallel tests) sometimes more than 10 ms later, it answers ESTALE. A real
  // shortage of memory lasts, so a few short waits tell them apart, and only a node whose object
  // went (or a failing system) ever waits here.
  for (int i = 0; fd < 0 && errno == ENOMEM && i < kMemoryRetries; ++i) {
    usleep(kMemoryRetryMicros);
    fd = open_by_handle_at(mount_fd, fh, flags);
  }
  const int err = errno;
  if (previous != daemon_uid) syscall(SYS_setfsuid, previous);
  errno = err;
  return fd;
}

bool HandlesWork(int root_fd, int* mount_id, int* error) {
  auto h = ObjectHandle::Of(root_fd);
  if (!h) {
    *error = errno;
    return false;
  }
  *mount_id = h->mount_id();
  int fd = h->Open(root_fd, O_PATH | O_CLOEXEC);
  if (fd < 0) {
    *error = errno;
    return false;
  }
  close(fd);
  return true;
}

}  // namespace ktmfs::fstx

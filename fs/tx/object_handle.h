// A backing object's file handle (name_to_handle_at(2)): what the daemon keeps of an object the
// kernel knows when it does not keep a descriptor open on it. Opened again with
// open_by_handle_at(2), which needs CAP_DAC_READ_SEARCH, the handle reaches the same object or
// fails (ESTALE once the object is gone): the handle carries the object's generation, so a
// number reused by a later object never opens it.
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace ktmfs::fstx {

class ObjectHandle {
 public:
  // The handle of the object `fd` holds (any descriptor, O_PATH included); nothing where its
  // filesystem gives none (EOPNOTSUPP, or a handle larger than MAX_HANDLE_SZ).
  static std::optional<ObjectHandle> Of(int fd);
  // The handle of the object at `path` (a symlink itself, not followed); nothing as above, or
  // where the path does not resolve.
  static std::optional<ObjectHandle> At(const char* path);

  // The mount the descriptor it was taken from was on: a handle opened on another mount of the
  // same filesystem would lose that mount's flags (a read-only bind mount, say).
  int mount_id() const { return mount_id_; }

  // Opens the object anew with `flags`, `mount_fd` being any descriptor on its filesystem;
  // -1 with errno as open_by_handle_at(2) sets it. Opened as the daemon itself even on a thread
  // that has taken on a caller's file-system identity (a request's caller, or a writer's, see
  // writer_identity.h): that drops CAP_DAC_READ_SEARCH, which the call needs. The caller's
  // permissions apply to what is done with the object afterwards, as they did when it was first
  // looked up.
  int Open(int mount_fd, int flags) const;

  // The same object (the mount aside).
  bool operator==(const ObjectHandle& o) const { return type_ == o.type_ && bytes_ == o.bytes_; }

 private:
  static std::optional<ObjectHandle> Taken(int dirfd, const char* path, int flags);

  int type_ = 0;
  int mount_id_ = -1;
  std::vector<unsigned char> bytes_;
};

// Whether this daemon may open objects by handle on the filesystem `root_fd` (not O_PATH) is
// on: it has CAP_DAC_READ_SEARCH and the filesystem gives handles. Tried on the root itself.
// `*mount_id` is the mount root_fd is on.
bool HandlesWork(int root_fd, int* mount_id, int* error);

}  // namespace ktmfs::fstx

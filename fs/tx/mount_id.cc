#include "fs/tx/mount_id.h"

#include <fcntl.h>
#include <sys/stat.h>

namespace ktmfs::fstx {

std::optional<uint64_t> MountIdAt(int dirfd, const char* name) {
  struct statx stx;
  const int flags = AT_SYMLINK_NOFOLLOW | (name[0] == '\0' ? AT_EMPTY_PATH : 0);
  if (::statx(dirfd, name, flags, STATX_MNT_ID, &stx) != 0) return std::nullopt;
  if ((stx.stx_mask & STATX_MNT_ID) == 0) return std::nullopt;
  return stx.stx_mnt_id;
}

std::optional<uint64_t> MountIdOf(const std::string& path) {
  return MountIdAt(AT_FDCWD, path.c_str());
}

}  // namespace ktmfs::fstx

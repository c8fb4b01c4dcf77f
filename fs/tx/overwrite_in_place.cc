#include "fs/tx/overwrite_in_place.h"

#include <linux/magic.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace ktmfs::fstx {

bool OverwritesInPlace(const std::string& path) {
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0) return false;
  switch (static_cast<unsigned long>(fs.f_type)) {
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      return true;
    default:
      return false;
  }
}

bool HasBlocks(int fd, uint64_t size, uint64_t offset, uint64_t length) {
  if (offset + length > size) return false;
  const off_t hole = ::lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
  return hole >= 0 && static_cast<uint64_t>(hole) >= offset + length;
}

}  // namespace ktmfs::fstx

#include "fs/tx/overwrite_in_place.h"

#include <linux/magic.h>
#include <sys/vfs.h>

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

}  // namespace ktmfs::fstx

// Whether a backing filesystem overwrites a file's blocks where they are. Apply's space
// reservation and the order it writes a truncated file in (apply.cc) count on it: on such a
// filesystem an overwrite of blocks a file has needs no new ones. A filesystem that copies on
// write (btrfs, ZFS, bcachefs) allocates anew for every overwrite, and one not known here is
// taken for one that might.
#pragma once

#include <string>

namespace ktmfs::fstx {

// ext2/3/4, XFS and tmpfs: true. Anything else, or a path statfs cannot reach: false. (XFS
// copies shared, reflinked extents on write; freeing them first would not free their blocks
// either, and fallocate does not reserve for them, so it counts as overwriting in place.)
bool OverwritesInPlace(const std::string& path);

}  // namespace ktmfs::fstx

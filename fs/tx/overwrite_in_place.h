// Whether a backing filesystem overwrites a file's blocks where they are. Apply's space
// reservation and the order it writes a truncated file in (apply.cc) count on it: on such a
// filesystem an overwrite of blocks a file has needs no new ones. A filesystem that copies on
// write (btrfs, ZFS, bcachefs) allocates anew for every overwrite, and one not known here is
// taken for one that might.
#pragma once

#include <cstdint>
#include <string>

namespace ktmfs::fstx {

// ext2/3/4, XFS and tmpfs: true. Anything else, or a path statfs cannot reach: false. (XFS
// copies shared, reflinked extents on write; freeing them first would not free their blocks
// either, and fallocate does not reserve for them, so it counts as overwriting in place.)
bool OverwritesInPlace(const std::string& path);

// Whether the file `fd` of `size` bytes has a block for every byte of [offset, offset+length):
// an overwrite there needs none on such a filesystem. A hole, or a range past the end, has not.
// Unwritten extents count as holes to SEEK_HOLE on ext4 and XFS (taken for holes costs nothing
// but a reservation made again).
bool HasBlocks(int fd, uint64_t size, uint64_t offset, uint64_t length);

}  // namespace ktmfs::fstx

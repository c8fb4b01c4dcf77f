// Which mount an object is reached through. Apply moves names by rename(2), between staging and
// the backing directory, and rename never crosses a mount, not even a bind mount of the same
// filesystem (same st_dev, EXDEV all the same). So what a transaction may rename is bounded by
// the mount of its backing directory, and the device number cannot tell.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ktmfs::fstx {

// The mount id (statx STATX_MNT_ID) of `name` under the directory `dirfd`, or of `dirfd`
// itself when `name` is empty. A final symlink is not followed; a mount point is crossed, as
// every path lookup does, so a mount point's name gives the mounted tree's id. nullopt if the
// object cannot be reached or the kernel gives no mount id.
std::optional<uint64_t> MountIdAt(int dirfd, const char* name);
std::optional<uint64_t> MountIdOf(const std::string& path);

}  // namespace ktmfs::fstx

// Sources of one mount must not overlap: two resource managers over one file would each lock
// and apply it on their own, so two transactions could change it at once through two names.
// A directory is known by its (dev, ino), not by its path: a symlink or a bind mount gives
// another path to the same directory.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "fs/mount/layout.h"
#include "log/status.h"

namespace ktmfs::fs {

struct DirId {
  dev_t dev;
  ino_t ino;
  bool operator==(const DirId&) const = default;
};

// The directory at `path` and every directory above it, up to the root, nearest first.
Result<std::vector<DirId>> AncestorChain(const std::string& path);

// Given each source's chain (as AncestorChain returns it, in the order of `sources`): an
// error naming both sources if one is the other or lies inside it.
Status CheckDisjoint(const std::vector<Source>& sources,
                     const std::vector<std::vector<DirId>>& chains);

// AncestorChain for every source, then CheckDisjoint.
Status CheckSourcesDisjoint(const std::vector<Source>& sources);

}  // namespace ktmfs::fs

// Makes the changes of several applied transactions durable at once: every file and directory
// they changed is fsynced once, all in flight together through io_uring, so the filesystem can
// share its journal commits among them (one after another, each fsync would wait for its own).
#pragma once

#include <vector>

#include "fs/tx/apply.h"
#include "log/status.h"

namespace ktmfs::fstx {

Status SyncTogether(const std::vector<const AppliedChanges*>& changes);

}  // namespace ktmfs::fstx

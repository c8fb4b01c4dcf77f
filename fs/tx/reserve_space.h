// Space for apply, reserved at prepare: once a commit is decided, a full backing filesystem
// must not stop its apply half way (contract §3: everything that could make apply fail is
// checked before the decision).
#pragma once

#include <string>

#include "fs/tx/apply_plan.h"
#include "log/status.h"

namespace ktmfs::fstx {

// Allocates, without changing any size (FALLOC_FL_KEEP_SIZE), every range apply will write
// into an existing file of `plan`, found at its original path under `backing_root`. ENOSPC
// or EDQUOT naming the file when the backing filesystem cannot hold them. New files need
// nothing: their staged files are renamed into place. Best effort otherwise: a filesystem
// without fallocate, or a file the daemon cannot open for writing, reserves nothing (apply
// then reports what fails, and the commit stays pending).
Status ReserveApplySpace(const std::string& backing_root, const ApplyPlan& plan);

}  // namespace ktmfs::fstx

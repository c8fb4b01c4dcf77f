// Inode flags that make apply fail, checked before the decision. An administrator may mark a
// backing file or directory immutable (chattr +i) or append-only (chattr +a) while a
// transaction has changed it, or under a directory it changed. Apply would then meet EPERM
// after the commit was acknowledged, leave the commit pending, and show the part applied
// before it (new files, say) to everyone: the contract wants what could make apply fail
// refused before the decision.
#pragma once

#include <string>

#include "fs/tx/apply_plan.h"
#include "log/status.h"

namespace ktmfs::fstx {

// EPERM naming the object, if `plan` changes an existing object of `backing_root` that is
// immutable or append-only (every change apply makes to one fails: data, attributes, names,
// links), or changes a name in an immutable directory, or removes a name from an append-only
// directory (which allows only new names); a directory the plan moves is found under its
// original name. Objects whose filesystem does not report the flags (statx attributes) pass.
// The flags can still be set after this check: apply then fails as before, and the commit stays
// pending (fs/TRANSACTIONS.md, limits).
Status CheckNoUnchangeableFlags(const std::string& backing_root, const ApplyPlan& plan);

}  // namespace ktmfs::fstx

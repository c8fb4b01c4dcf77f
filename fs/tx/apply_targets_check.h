// What apply will meet in the backing directory, checked before the decision. The contract wants
// everything that could make apply fail refused then: once the decision is durable, a failure
// leaves the commit pending, and the part applied before it (new files, say) shows to
// everyone. Behind the daemon's back, in the backing directory itself, where the conflict rules
// cannot see it, an administrator or a process may have
// - replaced or removed an object the transaction changed, or moved it elsewhere;
// - made an object at a name the transaction creates;
// - put a symlink, or a file, where a directory apply works in was (security/003);
// - marked an object, or a directory whose names change, immutable (chattr +i) or append-only
//   (chattr +a) (tx/067).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <utility>

#include "fs/tx/apply_plan.h"
#include "fs/tx/object_handle.h"
#include "log/status.h"

namespace ktmfs::fstx {

// The handles of existing objects as the transaction first changed them, by (dev, ino): an
// object's number is reused once it is freed, and the transaction keeps no descriptor that
// would stop that (TxStaging::kCommittedOpen, attribute changes).
using ObjectIdentities = std::map<std::pair<dev_t, ino_t>, ObjectHandle>;

// Refuses, naming the object:
// - ESTALE: an existing object of `plan` is no longer at its original name under
//   `backing_root` (another object there that took its number has another handle than
//   `identities` gives, where it gives one);
// - EEXIST: something is at a name the plan gives an object, and the plan does not move it
//   away (apply would replace it);
// - ENAMETOOLONG: a name the plan gives is in a directory PATH_MAX or more bytes below
//   `backing_root`, which apply cannot reach;
// - the resolution's errno (ELOOP, EXDEV, ENOTDIR): a name or directory apply reaches cannot be
//   reached beneath the root without following a symlink;
// - EPERM: an existing object of `plan` is immutable or append-only (every change apply makes
//   to one fails: data, attributes, names, links), or a name changes in an immutable directory,
//   or one is removed from an append-only directory (which takes only new names).
// Directories under one the plan moves are looked at under their names before apply. Flags a
// filesystem does not report (statx attributes) pass. Anything done after this check still
// makes apply fail as before, and the commit stays pending (fs/TRANSACTIONS.md).
Status CheckApplyTargets(const std::string& backing_root, const ApplyPlan& plan,
                         const ObjectIdentities& identities = {});

}  // namespace ktmfs::fstx

// Which set-id bits a change drops, decided the way the kernel decides it for a local
// filesystem (setattr_should_drop_suidgid and setattr_should_drop_sgid, Linux 6.x).
//
// Why the daemon needs this: without FUSE_CAP_HANDLE_KILLPRIV(_V2) the kernel clears set-id
// bits of a FUSE file itself, by sending a SETATTR with the new mode, but it only ever clears
// set-group-id when the group may execute (fuse_setattr's older rule). Since Linux 6.2 a local
// filesystem also drops set-group-id without group execute when the caller is neither in the
// file's group nor has CAP_FSETID; for that case the kernel sends the daemon a SETATTR that
// sets nothing (for a write) or only the size or owner (truncate, chown). fallocate sends
// nothing at all. The daemon, acting as root, keeps the bits unless it clears them itself.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <vector>

#include "fs/control/proc_reader.h"  // InDaemonUserNamespace
#include "fs/fuse/caller.h"
#include "fs/tx/xattr_names.h"

namespace ktmfs::fs {

using fstx::kCapabilityXattr;

// What the decision needs to know of the caller.
struct SetidCaller {
  bool fsetid = false;        // CAP_FSETID in its effective set
  gid_t fsgid = 0;            // its filesystem group id
  std::vector<gid_t> groups;  // its supplementary groups
  bool InGroup(gid_t gid) const;
};

enum class SetidChange {
  kWrite,  // write, truncate, fallocate (punch, zero range): should_drop_suidgid
  kChown,  // any successful chown, chown(f, -1, -1) included: KILL_SUID | should_drop_sgid
  kChmod,  // a new mode (setattr_prepare): set-group-ID unless in the group or CAP_FSETID
};

// The bits (S_ISUID, S_ISGID) that `change` by `caller` drops from a file with mode `mode` and
// group `gid` (for kChmod: the new mode, and the new group if the change sets one); 0 for
// anything but a regular file, except for kChmod.
mode_t SetidBitsToDrop(mode_t mode, gid_t gid, const SetidCaller& caller, SetidChange change);

// Whether task `pid`'s user namespace maps the (daemon's) uid `uid` and gid `gid`
// (/proc/PID/uid_map, gid_map). False if the task is gone.
bool MapsIds(pid_t pid, uid_t uid, gid_t gid);

// The request's caller, from /proc/TID/status (CapEff, Gid, Groups). Without a pid (another pid
// namespace) or when the task is gone: its uid 0 counts as CAP_FSETID, its gid as its only
// group. A request the kernel marked as from a caller without CAP_FSETID (fs/fuse/kernel_channel.h)
// has none, whatever /proc says.
SetidCaller SetidCallerOf(const Caller& who);

// SetidBitsToDrop for `who`, which is only looked up when `st` has a set-id bit.
mode_t SetidBitsToDrop(const Caller& who, const struct stat& st, SetidChange change);

// For a write (or fallocate, or copy into) by `who` through the open backing file `fd`:
// clears the set-id bits the write drops. Returns 0 or an errno; `*cleared` says whether the
// mode changed, and with it the kernel's cached attributes.
int DropSetidBeforeWrite(const Caller& who, int fd, bool* cleared);

// A SETATTR from the kernel (`attr`, `to_set`: FUSE_SET_ATTR_* bits) on an object that has the
// attributes `before`, adjusted so that the set-id bits the change drops are cleared: adds
// FUSE_SET_ATTR_MODE (or clears bits of the mode it sets) and returns true when it changed
// anything. The kernel's requests that need it:
// - one that sets nothing (or only ctime): chown(f, -1, -1), or what is left of the kernel's
//   clearing for a write, fallocate or O_DIRECT write by a caller outside the group (it sent
//   whatever else had to go; the rule for chown decides this case the same way);
// - an owner (chown) or a size (truncate);
// - a mode that keeps set-group-ID for a caller outside the group without CAP_FSETID: a chmod
//   never arrives so (the kernel's setattr_prepare drops it), so it is the kernel's clearing of
//   set-user-ID for a write (ATTR_FORCE skips that check), and the write drops it too.
bool AdjustSetattrForSetid(const Caller& who, const struct stat& before, struct stat* attr,
                           int* to_set);

}  // namespace ktmfs::fs

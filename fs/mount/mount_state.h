// The mount's own state as the kernel keeps it: read-only or not, and `-o remount`.
//
// mount(8) runs the filesystem's helper for `mount -o remount,ro DIR` too, so `ktmfs SOURCE
// DIR -o remount,...` must not start a second daemon: it asks the kernel to remount DIR (a
// live ktmfs mount) read-only or read-write and exits. The running daemon is not involved: the
// kernel makes every write through a read-only mount fail with EROFS before the daemon hears of
// it. What it does hear of is commit, an ioctl or xattr that a read-only mount lets through; it
// asks IsReadOnly first, from /proc/self/mountinfo (statvfs of its own mount would be a request
// to itself).
#pragma once

#include <string>

#include "log/status.h"

namespace ktmfs::fs {

// Whether the ktmfs mount at `mountpoint` (absolute) is read-only: its mount or its superblock.
// NotFound if no FUSE filesystem is mounted there.
Result<bool> IsReadOnly(const std::string& mountpoint);

// Whether a ktmfs filesystem is mounted at `mountpoint` in this mount namespace.
bool KtmfsMountedAt(const std::string& mountpoint);

// Remounts the ktmfs mount at `mountpoint` read-only or read-write, keeping its other mount
// flags (nosuid, nodev, noexec, atime). Refused unless a fuse.ktmfs filesystem is mounted there;
// EBUSY from the kernel when going read-only while files are open for writing.
Status Remount(const std::string& mountpoint, bool read_only);

}  // namespace ktmfs::fs

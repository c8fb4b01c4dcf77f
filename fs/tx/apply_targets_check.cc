#include "fs/tx/apply_targets_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "fs/tx/beneath.h"
#include "fs/tx/mount_id.h"

namespace ktmfs::fstx {
namespace {

constexpr uint64_t kUnchangeable = STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND;
constexpr unsigned kWanted = STATX_BASIC_STATS | STATX_MNT_ID;

std::string Shown(const BackingRoot& root, const std::string& rel) {
  return rel.empty() ? root.path() : root.path() + "/" + rel;
}

// statx of `name`, not following a symlink: 0, the resolution's errno, or statx's.
int LookAt(const BackingName& name, struct statx* stx) {
  if (name.error() != 0) return name.error();
  return ::statx(AT_FDCWD, name.path(), AT_SYMLINK_NOFOLLOW, kWanted, stx) == 0 ? 0 : errno;
}

// The same for `rel` beneath the root (the root itself if empty).
int Look(const BackingRoot& root, const std::string& rel, struct statx* stx) {
  if (rel.empty()) {
    return ::statx(AT_FDCWD, root.path().c_str(), 0, kWanted, stx) == 0 ? 0 : errno;
  }
  return LookAt(root.Name(rel), stx);
}

// Apply moves names by rename(2), which never crosses a mount (mount_id.h): a name it moves, or
// a directory it adds names to or takes them from, must be on the backing root's own mount. A
// transaction's own requests were refused so (LockEntry); this catches mounts made behind the
// daemon's back since, which would leave the commit acknowledged and its apply pending for ever.
Status OffTheMount(const BackingRoot& root, const std::string& rel, const struct statx& stx,
                   std::optional<uint64_t> root_mount, const std::string& why) {
  if (!root_mount || (stx.stx_mask & STATX_MNT_ID) == 0 || stx.stx_mnt_id == *root_mount)
    return Status::Ok();
  return Status::Error(EXDEV, Shown(root, rel) +
                                  " is on another mount than the backing directory (a mount "
                                  "point, or inside one), and the transaction " +
                                  why + ": apply moves names by rename, which cannot cross mounts");
}

uint64_t Unchangeable(const struct statx& stx) {
  return stx.stx_attributes & stx.stx_attributes_mask & kUnchangeable;
}

Status Unreachable(const BackingRoot& root, const std::string& rel, int err) {
  return Status::Error(err, "cannot reach " + Shown(root, rel) + ": " + UnreachableReason(err));
}

Status Refuse(const BackingRoot& root, const std::string& rel, uint64_t flags,
              const std::string& why) {
  const char* what =
      flags & STATX_ATTR_IMMUTABLE ? "immutable (chattr +i)" : "append-only (chattr +a)";
  return Status::Error(EPERM,
                       Shown(root, rel) + " is " + what + " in the backing directory, " + why);
}

// Whether the object at `name` (null: the root) is the one `identities` knows by its number
// (true where it does not know it, or the filesystem gives no handle).
bool SameObject(const BackingName* name, const ObjectId& id, const ObjectIdentities& identities) {
  auto known = identities.find({static_cast<dev_t>(id.dev), static_cast<ino_t>(id.ino)});
  if (known == identities.end() || name == nullptr) return true;
  auto now = ObjectHandle::At(name->path());
  return !now || *now == known->second;
}

// Apply reaches a name through its directory's path below the root (beneath.h), which the kernel
// resolves up to PATH_MAX only. A name the transaction gives deeper than that (in a tree it
// made, which it reaches through staging, or below a directory it moved) would be acknowledged
// and then never placed.
Status CheckReachable(const BackingRoot& root, const ApplyPlan& plan) {
  for (const PlannedObject& o : plan.objects) {
    for (const std::string& name : o.finals) {
      const std::string dir = ParentPath(name);
      if (dir.size() < PATH_MAX) continue;
      return Status::Error(ENAMETOOLONG, "a name the transaction gives is in a directory " +
                                             std::to_string(dir.size()) + " bytes below " +
                                             root.path() + " (" + Shown(root, dir.substr(0, 64)) +
                                             "...), deeper than apply can reach (" +
                                             std::to_string(PATH_MAX - 1) + " bytes)");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckApplyTargets(const std::string& backing_root, const ApplyPlan& plan,
                         const ObjectIdentities& identities) {
  BackingRoot root(backing_root);
  KTMFS_RETURN_IF_ERROR(CheckReachable(root, plan));
  const NamesBeforeApply before(plan);
  const std::optional<uint64_t> root_mount = MountIdOf(backing_root);
  for (const PlannedObject& o : plan.objects) {
    if (o.is_new()) continue;
    struct statx stx;
    // Resolved once, for the statx and the handle.
    std::optional<BackingName> name;
    if (!o.original.empty()) name.emplace(root.Name(o.original));
    if (int err = name ? LookAt(*name, &stx) : Look(root, "", &stx); err == ENOENT) {
      return Status::Error(ESTALE, Shown(root, o.original) +
                                       " is gone: it was removed or moved in the backing "
                                       "directory after the transaction changed it");
    } else if (err != 0) {
      return Unreachable(root, o.original, err);
    }
    const bool number =
        makedev(stx.stx_dev_major, stx.stx_dev_minor) == o.id.dev && stx.stx_ino == o.id.ino;
    if (!number || !SameObject(name ? &*name : nullptr, o.id, identities)) {
      return Status::Error(ESTALE, Shown(root, o.original) +
                                       " is no longer the object the transaction changed: it "
                                       "was replaced in the backing directory" +
                                       (number ? " by another that took its number" : ""));
    }
    if (uint64_t f = Unchangeable(stx); f != 0)
      return Refuse(root, o.original, f, "and the transaction changed it");
    const bool named_elsewhere = std::any_of(o.finals.begin(), o.finals.end(),
                                             [&](const std::string& f) { return f != o.original; });
    if (o.parks() || named_elsewhere) {
      KTMFS_RETURN_IF_ERROR(
          OffTheMount(root, o.original, stx, root_mount, "moves, links or removes it"));
    }
  }
  // A name the transaction gives an object was free in its view: something there now was put
  // there behind the daemon's back, and apply would replace it unseen.
  for (const PlannedObject& o : plan.objects) {
    for (const std::string& name : o.finals) {
      if (!o.is_new() && name == o.original) continue;
      auto dir = before.Of(ParentPath(name));
      if (!dir) continue;
      const std::string leaf = name.substr(name.rfind('/') + 1);  // npos + 1: the whole name
      const std::string now = dir->empty() ? leaf : *dir + "/" + leaf;
      struct statx stx;
      if (!before.Vacated(now) && Look(root, now, &stx) == 0) {
        return Status::Error(EEXIST, Shown(root, now) +
                                         " was made in the backing directory behind ktmfs's "
                                         "back, where the transaction puts " +
                                         (o.is_new() ? "a new object" : "an object it moved"));
      }
    }
  }
  const NamesBeforeApply::ChangedDirs dirs = before.DirsChanged();
  for (const std::string& dir : dirs.losing) {
    // Its objects were looked at above, so it is there.
    struct statx stx;
    if (int err = Look(root, dir, &stx); err != 0) return Unreachable(root, dir, err);
    if (uint64_t f = Unchangeable(stx); f != 0)
      return Refuse(root, dir, f, "and the transaction removes a name from it");
    KTMFS_RETURN_IF_ERROR(OffTheMount(root, dir, stx, root_mount, "removes a name from it"));
  }
  for (const std::string& dir : dirs.gaining) {
    if (dir.empty()) continue;
    // Absent: a directory the transaction makes.
    struct statx stx;
    if (int err = Look(root, dir, &stx); err == ENOENT) {
      continue;
    } else if (err != 0) {
      return Unreachable(root, dir, err);
    } else if (!S_ISDIR(stx.stx_mode)) {
      return Unreachable(root, dir, S_ISLNK(stx.stx_mode) ? ELOOP : ENOTDIR);
    }
    if (uint64_t f = Unchangeable(stx); f & STATX_ATTR_IMMUTABLE)
      return Refuse(root, dir, f, "and the transaction adds a name to it");
    KTMFS_RETURN_IF_ERROR(OffTheMount(root, dir, stx, root_mount, "adds a name to it"));
  }
  return Status::Ok();
}

}  // namespace ktmfs::fstx

#include "fs/tx/apply_targets_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fs/tx/beneath.h"

namespace ktmfs::fstx {
namespace {

constexpr uint64_t kUnchangeable = STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND;

std::string Shown(const BackingRoot& root, const std::string& rel) {
  return rel.empty() ? root.path() : root.path() + "/" + rel;
}

// statx of `rel` beneath the root (the root itself if empty), not following a symlink. 0, the
// resolution's errno, or statx's.
int Look(const BackingRoot& root, const std::string& rel, struct statx* stx) {
  if (rel.empty()) {
    return ::statx(AT_FDCWD, root.path().c_str(), 0, STATX_BASIC_STATS, stx) == 0 ? 0 : errno;
  }
  BackingName name = root.Name(rel);
  if (name.error() != 0) return name.error();
  return ::statx(AT_FDCWD, name.path(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, stx) == 0 ? 0
                                                                                          : errno;
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

// Whether the object at `rel` is the one `identities` knows by its number (true where it does
// not know it, or the filesystem gives no handle).
bool SameObject(const BackingRoot& root, const std::string& rel, const ObjectId& id,
                const ObjectIdentities& identities) {
  auto known = identities.find({static_cast<dev_t>(id.dev), static_cast<ino_t>(id.ino)});
  if (known == identities.end() || rel.empty()) return true;
  BackingName name = root.Name(rel);
  if (name.error() != 0) return true;  // Look reached it a moment ago; apply will say
  auto now = ObjectHandle::At(name.path());
  return !now || *now == known->second;
}

}  // namespace

Status CheckApplyTargets(const std::string& backing_root, const ApplyPlan& plan,
                         const ObjectIdentities& identities) {
  BackingRoot root(backing_root);
  const NamesBeforeApply before(plan);
  for (const PlannedObject& o : plan.objects) {
    if (o.is_new()) continue;
    struct statx stx;
    if (int err = Look(root, o.original, &stx); err == ENOENT) {
      return Status::Error(ESTALE, Shown(root, o.original) +
                                       " is gone: it was removed or moved in the backing "
                                       "directory after the transaction changed it");
    } else if (err != 0) {
      return Unreachable(root, o.original, err);
    }
    const bool number =
        makedev(stx.stx_dev_major, stx.stx_dev_minor) == o.id.dev && stx.stx_ino == o.id.ino;
    if (!number || !SameObject(root, o.original, o.id, identities)) {
      return Status::Error(ESTALE, Shown(root, o.original) +
                                       " is no longer the object the transaction changed: it "
                                       "was replaced in the backing directory" +
                                       (number ? " by another that took its number" : ""));
    }
    if (uint64_t f = Unchangeable(stx); f != 0)
      return Refuse(root, o.original, f, "and the transaction changed it");
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
  }
  return Status::Ok();
}

}  // namespace ktmfs::fstx

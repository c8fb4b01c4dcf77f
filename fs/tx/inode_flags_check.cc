#include "fs/tx/inode_flags_check.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <set>

#include "fs/tx/beneath.h"

namespace ktmfs::fstx {
namespace {

std::string ParentOf(const std::string& rel) {
  const size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

// The immutable and append-only attributes of `rel` (the root itself if empty), as far as its
// filesystem reports them; none if it cannot be reached (apply then reports that itself).
uint64_t FlagsOf(const BackingRoot& root, const std::string& rel) {
  struct statx stx;
  int r;
  if (rel.empty()) {
    r = ::statx(AT_FDCWD, root.path().c_str(), 0, STATX_BASIC_STATS, &stx);
  } else {
    BackingName name = root.Name(rel);
    r = name.error() != 0
            ? -1
            : ::statx(AT_FDCWD, name.path(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx);
  }
  if (r != 0) return 0;
  return stx.stx_attributes & stx.stx_attributes_mask & (STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND);
}

Status Refuse(const BackingRoot& root, const std::string& rel, uint64_t flags,
              const std::string& why) {
  const std::string shown = rel.empty() ? root.path() : root.path() + "/" + rel;
  const char* what =
      flags & STATX_ATTR_IMMUTABLE ? "immutable (chattr +i)" : "append-only (chattr +a)";
  return Status::Error(EPERM, shown + " is " + what + " in the backing directory, " + why);
}

// Where `path`, a name as it will be after apply, is now: under a directory the plan moves,
// it is still under that directory's original name.
std::string PathNow(const ApplyPlan& plan, const std::string& path) {
  const PlannedObject* moved = nullptr;
  size_t longest = 0;
  for (const PlannedObject& o : plan.objects) {
    if (o.is_new() || o.finals.empty() || !o.parks()) continue;
    const std::string& to = o.finals.front();
    const bool under =
        path == to || (path.size() > to.size() && path.starts_with(to) && path[to.size()] == '/');
    if (under && to.size() > longest) {
      moved = &o;
      longest = to.size();
    }
  }
  return moved == nullptr ? path : moved->original + path.substr(longest);
}

}  // namespace

Status CheckNoUnchangeableFlags(const std::string& backing_root, const ApplyPlan& plan) {
  BackingRoot root(backing_root);
  // Directories losing a name, and directories gaining one: an append-only directory refuses
  // only the first.
  std::set<std::string> losing, gaining;
  for (const PlannedObject& o : plan.objects) {
    if (!o.is_new()) {
      if (uint64_t f = FlagsOf(root, o.original); f != 0)
        return Refuse(root, o.original, f, "and the transaction changed it");
      if (o.parks()) losing.insert(ParentOf(o.original));
    }
    for (const std::string& name : o.finals)
      if (o.is_new() || name != o.original) gaining.insert(ParentOf(name));
  }
  for (const std::string& dir : losing)
    if (uint64_t f = FlagsOf(root, dir); f != 0)
      return Refuse(root, dir, f, "and the transaction removes a name from it");
  for (const std::string& dir : gaining) {
    const std::string now = PathNow(plan, dir);
    if (uint64_t f = FlagsOf(root, now); f & STATX_ATTR_IMMUTABLE)
      return Refuse(root, now, f, "and the transaction adds a name to it");
  }
  return Status::Ok();
}

}  // namespace ktmfs::fstx

#include "fs/ops/permission.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/capability.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "fs/ops/posix_acl.h"
#include "fs/ops/setid.h"

namespace ktmfs::fs {

Requester::Requester(uid_t uid, gid_t gid, std::function<std::vector<gid_t>()> groups,
                     std::function<uint64_t()> capabilities,
                     std::function<bool(uid_t, gid_t)> covers)
    : uid_(uid),
      gid_(gid),
      groups_fn_(std::move(groups)),
      caps_fn_(std::move(capabilities)),
      covers_(std::move(covers)) {}

bool Requester::InGroup(gid_t g) const {
  if (g == gid_) return true;
  if (!groups_) groups_ = groups_fn_ ? groups_fn_() : std::vector<gid_t>{};
  return std::find(groups_->begin(), groups_->end(), g) != groups_->end();
}

bool Requester::Capable(int cap) const {
  if (covers_) return false;  // another user namespace's
  if (!caps_) caps_ = caps_fn_ ? caps_fn_() : uint64_t{0};
  return cap >= 0 && cap < 64 && ((*caps_ >> cap) & 1) != 0;
}

bool Requester::CapableOver(int cap, const struct stat& st) const {
  if (!covers_) return Capable(cap);
  if (!caps_) caps_ = caps_fn_ ? caps_fn_() : uint64_t{0};
  return cap >= 0 && cap < 64 && ((*caps_ >> cap) & 1) != 0 && covers_(st.st_uid, st.st_gid);
}

namespace {

bool IsOwner(const Requester& who, const struct stat& st) {
  return who.uid() == st.st_uid;
}

bool OwnerOrCapable(const Requester& who, const struct stat& st) {
  return IsOwner(who, st) || who.CapableOver(CAP_FOWNER, st);
}

bool HasPrefix(const char* name, const char* prefix) {
  return std::strncmp(name, prefix, std::strlen(prefix)) == 0;
}

}  // namespace

int MayAccess(const Requester& who, const struct stat& st, int mask, const PosixAcl* acl) {
  mask &= kMayRead | kMayWrite | kMayExec;
  mode_t bits = st.st_mode;
  // As acl_permission_check: the owner's bits decide for the owner; an ACL is consulted only
  // when the group class has some permission (a mask of nothing shuts every entry out).
  if (IsOwner(who, st)) {
    if ((mask & ~static_cast<int>((bits >> 6) & 7)) == 0) return 0;
  } else if (acl != nullptr && !acl->empty() && (st.st_mode & S_IRWXG)) {
    if (acl->Permission(who, st, mask) == 0) return 0;
  } else {
    if (who.InGroup(st.st_gid)) bits >>= 3;
    if ((mask & ~static_cast<int>(bits & 7)) == 0) return 0;
  }
  // The capabilities, as generic_permission applies them.
  if (S_ISDIR(st.st_mode)) {
    if (!(mask & kMayWrite) && who.CapableOver(CAP_DAC_READ_SEARCH, st)) return 0;
    return who.CapableOver(CAP_DAC_OVERRIDE, st) ? 0 : EACCES;
  }
  if (mask == kMayRead && who.CapableOver(CAP_DAC_READ_SEARCH, st)) return 0;
  // Execution needs some execute bit even for root.
  if ((!(mask & kMayExec) || (st.st_mode & 0111)) && who.CapableOver(CAP_DAC_OVERRIDE, st))
    return 0;
  return EACCES;
}

int SetattrFields(int to_set) {
  return to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
                   FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                   FUSE_SET_ATTR_MTIME_NOW);
}

int MaySetattr(const Requester& who, const struct stat& st, int to_set, const struct stat& attr,
               bool by_handle, const PosixAcl* acl) {
  if ((to_set & FUSE_SET_ATTR_SIZE) && !by_handle) {
    if (int err = MayAccess(who, st, kMayWrite, acl); err != 0) return err;
  }
  if (to_set & FUSE_SET_ATTR_UID) {
    const bool keeps_own = IsOwner(who, st) && attr.st_uid == st.st_uid;
    if (!keeps_own && !who.CapableOver(CAP_CHOWN, st)) return EPERM;
  }
  if (to_set & FUSE_SET_ATTR_GID) {
    const bool owner_gives_own_group =
        IsOwner(who, st) && (attr.st_gid == st.st_gid || who.InGroup(attr.st_gid));
    if (!owner_gives_own_group && !who.CapableOver(CAP_CHOWN, st)) return EPERM;
  }
  if ((to_set & FUSE_SET_ATTR_MODE) && !OwnerOrCapable(who, st)) {
    // The kernel clears the set-id bits itself when anyone who may write writes or truncates
    // the file (file_remove_privs, forced past its own checks); that arrives as a chmod from
    // the writer. Nothing else is a non-owner's to change.
    const mode_t cur = st.st_mode & 07777;
    const mode_t want = attr.st_mode & 07777;
    const mode_t setid = S_ISUID | S_ISGID;
    const bool clears_setid =
        want != cur && (want & ~cur) == 0 && (want & ~setid) == (cur & ~setid);
    if (!clears_setid) return EPERM;
    if (!by_handle && MayAccess(who, st, kMayWrite, acl) != 0) return EPERM;
  }
  const int times = to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                              FUSE_SET_ATTR_MTIME_NOW);
  if (times != 0) {
    // Both times to now is utimes(NULL) ("touch"): the owner, or anyone who may write. Any
    // explicit time needs the owner; so does one time to now with the other left alone
    // (the kernel's ATTR_TIMES_SET), except through a handle, where the kernel's own write-back
    // of times arrives so.
    const int touch = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                      FUSE_SET_ATTR_MTIME_NOW;
    const bool explicit_time =
        ((times & FUSE_SET_ATTR_ATIME) && !(times & FUSE_SET_ATTR_ATIME_NOW)) ||
        ((times & FUSE_SET_ATTR_MTIME) && !(times & FUSE_SET_ATTR_MTIME_NOW));
    if (explicit_time || (times != touch && !by_handle)) {
      if (!OwnerOrCapable(who, st)) return EPERM;
    } else if (!OwnerOrCapable(who, st)) {
      if (int err = MayAccess(who, st, kMayWrite, acl); err != 0) return err;
    }
  }
  return 0;
}

int MayChangeEntry(const Requester& who, const struct stat& dir, const struct stat* victim,
                   const PosixAcl* dir_acl) {
  if (int err = MayAccess(who, dir, kMayWrite | kMayExec, dir_acl); err != 0) return err;
  if (victim != nullptr && (dir.st_mode & S_ISVTX) && !IsOwner(who, dir) &&
      !IsOwner(who, *victim) && !who.CapableOver(CAP_FOWNER, *victim)) {
    return EPERM;
  }
  return 0;
}

int MayLink(const Requester& who, const struct stat& object, bool protected_links,
            const PosixAcl* acl) {
  if (!protected_links || OwnerOrCapable(who, object)) return 0;
  const mode_t m = object.st_mode;
  const bool safe = S_ISREG(m) && !(m & S_ISUID) &&
                    (m & (S_ISGID | S_IXGRP)) != (S_ISGID | S_IXGRP) &&
                    MayAccess(who, object, kMayRead | kMayWrite, acl) == 0;
  return safe ? 0 : EPERM;
}

int MayChangeXattr(const Requester& who, const struct stat& st, const char* name,
                   const PosixAcl* acl) {
  // posix_acl_xattr_set: only the owner sets an object's ACLs, and symlinks have none.
  if (IsAclXattr(name)) {
    if (S_ISLNK(st.st_mode)) return EOPNOTSUPP;
    return OwnerOrCapable(who, st) ? 0 : EPERM;
  }
  if (HasPrefix(name, "trusted.")) return who.Capable(CAP_SYS_ADMIN) ? 0 : EPERM;
  if (HasPrefix(name, "security.")) {
    // The capability module's rule: file capabilities need CAP_SETFCAP, the rest of the
    // namespace CAP_SYS_ADMIN. No write permission is asked for either.
    const int cap = std::strcmp(name, kCapabilityXattr) == 0 ? CAP_SETFCAP : CAP_SYS_ADMIN;
    return (cap == CAP_SETFCAP ? who.CapableOver(cap, st) : who.Capable(cap)) ? 0 : EPERM;
  }
  if (HasPrefix(name, "user.")) {
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return EPERM;
    if (S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) && !OwnerOrCapable(who, st)) return EPERM;
  }
  return MayAccess(who, st, kMayWrite, acl);
}

std::optional<uint64_t> ParseCapEff(const std::string& status) {
  const char* key = "\nCapEff:";
  size_t at = status.find(key);
  if (at == std::string::npos) return std::nullopt;
  const char* p = status.c_str() + at + std::strlen(key);
  char* end = nullptr;
  const unsigned long long v = std::strtoull(p, &end, 16);
  if (end == p) return std::nullopt;
  return static_cast<uint64_t>(v);
}

}  // namespace ktmfs::fs

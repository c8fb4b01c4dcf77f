// POSIX ACLs as the kernel keeps them in the system.posix_acl_access and
// system.posix_acl_default extended attributes, with the kernel's rules for them
// (fs/posix_acl.c): validity, the permission check, inheritance by a new object and the
// agreement between an access ACL and the mode's permission bits.
//
// Plain operations leave all of this to the backing filesystem. A transaction cannot: its
// view of an object's mode and ACL lives in the log until the commit, so the daemon keeps
// them in step itself, as the backing filesystem would (fs/TRANSACTIONS.md, "ACLs").
//
// The xattr format (include/uapi/linux/posix_acl_xattr.h), little-endian:
//   u32 version (2), then per entry: u16 tag, u16 perm (rwx = 4|2|1), u32 id
// Entries are sorted by tag, then id; ids matter only for named users and groups.
//
// Pure: no I/O, so the rules are tested with made-up ACLs (tests/fs/posix_acl_test.cc).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktmfs::fs {

class Requester;

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";
inline constexpr const char* kAclDefaultXattr = "system.posix_acl_default";

// One of the two names above.
bool IsAclXattr(const char* name);

// The errno a failed read of the backing object's xattr `name` stands for: EOPNOTSUPP for an
// ACL means none (ENODATA), since a backing filesystem without ACLs has none to give, and the
// kernel asks for ACLs before permission checks and takes any other error as a failed check.
int XattrReadErrno(const char* name, int err);

class PosixAcl {
 public:
  enum Tag : uint16_t {
    kUserObj = 0x01,
    kUser = 0x02,
    kGroupObj = 0x04,
    kGroup = 0x08,
    kMask = 0x10,
    kOther = 0x20,
  };
  struct Entry {
    uint16_t tag;
    uint16_t perm;
    uint32_t id;
  };

  // The ACL an xattr value holds; nullopt if it is not one the kernel would accept
  // (posix_acl_from_xattr and posix_acl_valid). An ACL of no entries is "no ACL".
  static std::optional<PosixAcl> Parse(std::string_view value);
  std::string Serialize() const;

  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }

  // posix_acl_equiv_mode: the permission bits the ACL gives owner, group class and others
  // in `*perms`; true when the ACL says nothing more than those bits do.
  bool EquivalentToMode(mode_t* perms) const;

  // posix_acl_create_masq: a new object's access ACL from its parent's default ACL, with
  // `*mode` (the mode create asked for) and the ACL each narrowed by the other. True when the
  // result says more than the mode does (the object keeps it as its access ACL).
  bool CreateMasq(mode_t* mode);

  // __posix_acl_chmod: chmod's new permission bits carried into the ACL (the mask entry
  // takes the group bits when there is one).
  void Chmod(mode_t mode);

  // posix_acl_permission for a caller who does not own the object: 0 or EACCES.
  // `mask` holds access(2) bits (4 read, 2 write, 1 execute).
  int Permission(const Requester& who, const struct stat& st, int mask) const;

 private:
  std::vector<Entry> entries_;
};

inline const PosixAcl* OrNull(const std::optional<PosixAcl>& acl) {
  return acl ? &*acl : nullptr;
}

// What setting an access ACL does to the mode (posix_acl_update_mode): the permission bits
// become the ACL's, and the set-group-ID bit goes unless the caller is in the object's group
// or has CAP_FSETID. `*equivalent` says the ACL adds nothing to the mode, so none is stored.
mode_t ModeAfterAclSet(const Requester& who, const struct stat& st, const PosixAcl& acl,
                       bool* equivalent);

}  // namespace ktmfs::fs

// Permission checks the daemon makes itself before a transaction takes a lock: a transaction
// must take no lock on an object its caller may not change (fs/TRANSACTIONS.md, "Conflicts"),
// or one user could make another's files EBUSY for as long as its transaction lives.
//
// The kernel checks most requests already (the mount always has default_permissions), but not
// all that reach a lock (chown(f, -1, -1) arrives as a setattr without fields and without any
// check), and it checks against attributes it may have cached before a change it has not seen.
// These rules are the kernel's (generic_permission, setattr_prepare, may_delete, xattr_permission,
// cap_inode_setxattr, may_linkat), applied to the attributes the transaction sees, so a request
// the kernel lets through passes here too and the errno is the one native ext4 gives.
//
// Pure: no FUSE request and no /proc here but what Requester is given, so the rules are tested
// with made-up callers (tests/fs/permission_test.cc).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ktmfs::fs {

class PosixAcl;

// Who asks, as the kernel sees it for filesystem access: the filesystem uid and gid (what FUSE
// passes), the supplementary groups and the effective capabilities. Groups and capabilities
// cost a read of /proc, so they are fetched only when the mode bits alone do not decide.
class Requester {
 public:
  // `covers`, for a caller in another user namespace than the daemon's: whether its
  // capabilities reach an object with the given owner and group (both mapped into its
  // namespace, capable_wrt_inode_uidgid). Null: they reach everything.
  Requester(uid_t uid, gid_t gid, std::function<std::vector<gid_t>()> groups,
            std::function<uint64_t()> capabilities,
            std::function<bool(uid_t, gid_t)> covers = nullptr);

  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  bool InGroup(gid_t g) const;
  // `cap` is a CAP_* number (linux/capability.h), held in the daemon's user namespace (the
  // initial one), as capable() asks.
  bool Capable(int cap) const;
  // `cap` held over the object `st`, as capable_wrt_inode_uidgid asks: in the daemon's user
  // namespace, or in the caller's if that maps the object's owner and group.
  bool CapableOver(int cap, const struct stat& st) const;

 private:
  uid_t uid_;
  gid_t gid_;
  std::function<std::vector<gid_t>()> groups_fn_;
  std::function<uint64_t()> caps_fn_;
  std::function<bool(uid_t, gid_t)> covers_;
  mutable std::optional<std::vector<gid_t>> groups_;
  mutable std::optional<uint64_t> caps_;
};

// The access bits of access(2): 4 read, 2 write, 1 execute (search, for directories).
constexpr int kMayRead = 4;
constexpr int kMayWrite = 2;
constexpr int kMayExec = 1;

// generic_permission: the owner, group or other bits of `st` (for anyone but the owner, the
// object's access ACL `acl` instead when it has one), then CAP_DAC_OVERRIDE (and
// CAP_DAC_READ_SEARCH for reading and searching). 0 or EACCES. Every `acl` below is the
// access ACL of the object whose attributes come with it, or null when it has none.
int MayAccess(const Requester& who, const struct stat& st, int mask, const PosixAcl* acl = nullptr);

// The FUSE_SET_ATTR_* bits of `to_set` that change something the daemon keeps (mode, owner,
// size, times). A setattr with none (chown(f, -1, -1) arrives so, unchecked by the kernel)
// changes nothing: it takes no lock and conflicts with none.
int SetattrFields(int to_set);

// A setattr (FUSE_SET_ATTR_* bits in `to_set`, new values in `attr`) on an object with the
// attributes `st`, as setattr_prepare and notify_change decide it: chmod and explicit times
// need the owner (or CAP_FOWNER; a writer may clear the set-id bits, as the kernel does on
// its behalf when it writes), chown CAP_CHOWN (or the owner keeping its uid, or giving the
// object a group it is in), touching times to now the owner or write permission, truncate by
// path write permission (`by_handle`: through a descriptor, which was checked when opened).
// 0, EPERM or EACCES.
int MaySetattr(const Requester& who, const struct stat& st, int to_set, const struct stat& attr,
               bool by_handle, const PosixAcl* acl = nullptr);

// Creating, removing or renaming a name in directory `dir`: write and search permission on it;
// for removing or replacing `victim` in a sticky directory, the caller must own the directory
// or the victim (or have CAP_FOWNER). 0, EACCES or EPERM.
int MayChangeEntry(const Requester& who, const struct stat& dir, const struct stat* victim,
                   const PosixAcl* dir_acl = nullptr);

// link(2) of an existing object with fs.protected_hardlinks set (`protected_links`): the
// owner, CAP_FOWNER, or read and write permission on a regular file that is not set-id.
// 0 or EPERM.
int MayLink(const Requester& who, const struct stat& object, bool protected_links,
            const PosixAcl* acl = nullptr);

// Setting or removing the extended attribute `name` on an object with the attributes `st`
// (xattr_permission and the capability module): trusted.* needs CAP_SYS_ADMIN, security.* too
// (security.capability CAP_SETFCAP), user.* a regular file or directory (not a sticky directory
// of another user) the caller may write, system.posix_acl_* the owner (or CAP_FOWNER).
// 0, EPERM or EACCES.
int MayChangeXattr(const Requester& who, const struct stat& st, const char* name,
                   const PosixAcl* acl = nullptr);

// The effective capability set in the text of /proc/PID/status ("CapEff:\t<hex>"); nullopt if
// there is none.
std::optional<uint64_t> ParseCapEff(const std::string& status);

}  // namespace ktmfs::fs

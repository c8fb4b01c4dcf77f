// Extended attributes inside a transaction (see tx_ops.h): the view's set and removed names
// over the backing object's. Setting an access ACL changes the view's mode with it, as the
// backing filesystem would (fs/ops/posix_acl.h).
#include <errno.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cassert>
#include <cstring>
#include <vector>

#include "fs/mount/daemon_log.h"
#include "fs/ops/control.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/reserve_space.h"
#include "fs/tx/value_file.h"
#include "fs/tx/writer_identity.h"
#include "fs/tx/xattr_names.h"

namespace ktmfs::fs::txops {
namespace {

bool IsNew(const Inode* inode) {
  return inode->is_tx_version() && inode->object.kind == fstx::ObjectId::Kind::kNew;
}

// Whether a failed getxattr means "no such attribute".
bool IsNone(const char* name, int err) {
  return XattrReadErrno(name, err) == ENODATA;
}

// The backing object's value (`fd` < 0: a new object, which has none): nullopt if it has none,
// an errno on failure.
int BackingValue(int fd, const char* name, std::optional<std::string>* out) {
  out->reset();
  if (fd < 0) return 0;
  ProcPath path(fd);
  ssize_t n = getxattr(path.c_str(), name, nullptr, 0);
  if (n < 0) return IsNone(name, errno) ? 0 : errno;
  std::string v(static_cast<size_t>(n), '\0');
  n = getxattr(path.c_str(), name, v.data(), v.size());
  if (n < 0) return IsNone(name, errno) ? 0 : errno;
  v.resize(static_cast<size_t>(n));
  *out = std::move(v);
  return 0;
}

// The transaction's value of `object`'s attribute, or the backing object's (by `fd`).
int XattrOf(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object, int fd,
            const char* name, std::optional<std::string>* out) {
  if (fstx::TxOverlay* ov = fs.txs()->rm(source).Overlay(tx.id())) {
    auto x = ov->GetXattr(object, name);
    if (x.kind == fstx::XattrLookup::Kind::kValue && x.stored) {
      fstx::TxStaging* staging = fs.txs()->rm(source).FindStaging(tx.id());
      assert(staging != nullptr && "a stored value is in the transaction's staging");
      auto v = staging->LoadValue(*x.stored);
      if (!v.ok()) {
        // The caller gets the errno only: the daemon's log says which value and why.
        DaemonLog(LogLevel::kError, "transaction " + tx.id().ToString() + ": reading xattr " +
                                        name + ": " + v.status().ToString());
        return Errno(v.status());
      }
      *out = std::move(*v);
      return 0;
    }
    if (x.kind == fstx::XattrLookup::Kind::kValue) {
      *out = std::move(x.value);
      return 0;
    }
    if (x.kind == fstx::XattrLookup::Kind::kRemoved) {
      out->reset();
      return 0;
    }
  }
  // The committing transaction's value, while its apply still writes the object in place.
  if (object.kind == fstx::ObjectId::Kind::kExisting) {
    if (const fstx::ServedObject* served = tx.ServedFrom({object.dev, object.ino})) {
      if (auto v = served->Xattr(name)) {
        if (v->ok()) {
          *out = std::move(**v);
        } else if (v->status().code() == ENODATA) {
          out->reset();
        } else {
          return Errno(v->status());
        }
        return 0;
      }
    }
  }
  return BackingValue(fd, name, out);
}

std::optional<PosixAcl> AclFrom(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  auto acl = PosixAcl::Parse(*v);
  if (!acl || acl->empty()) return std::nullopt;
  return acl;
}

}  // namespace

int ViewXattr(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              std::optional<std::string>* out) {
  return XattrOf(fs, tx, inode->source_index, ObjectOf(inode),
                 IsNew(inode) ? -1 : inode->Fd().get(), name, out);
}

std::optional<PosixAcl> ViewAcl(Filesystem& fs, const TxGuard& tx, int source,
                                const ViewEntry& entry) {
  if (!entry.exists || S_ISLNK(entry.st.st_mode)) return std::nullopt;
  int fd = -1;
  if (!entry.is_new) {
    fd = OpenBeneath(fs, source, entry.backing_path, O_PATH);
    if (fd < 0) return std::nullopt;
  }
  std::optional<std::string> v;
  int err = XattrOf(fs, tx, source, entry.object, fd, kAclAccessXattr, &v);
  if (fd >= 0) close(fd);
  return err == 0 ? AclFrom(v) : std::nullopt;
}

std::optional<PosixAcl> ViewAcl(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name) {
  if (inode->is_virtual_root() || S_ISLNK(inode->type)) return std::nullopt;
  std::optional<std::string> v;
  if (ViewXattr(fs, tx, inode, name, &v) != 0) return std::nullopt;
  return AclFrom(v);
}

Status LogXattr(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                const std::string& path, const char* name,
                const std::optional<std::string>& value) {
  fstx::Op op;
  op.kind = value ? fstx::OpKind::kSetxattr : fstx::OpKind::kRemovexattr;
  op.object = object;
  op.path = path;
  op.name = name;
  if (value) op.value = *value;
  // A big value is kept on disk until the end, not in the daemon's memory (where: below).
  const bool big = value && value->size() > fstx::kMaxValueInMemory;
  if (big) op.stored_value = fstx::StoredValue{.offset = 0, .size = uint32_t(value->size())};
  // Counted before the value is stored: a change refused for its owner's cap takes no room.
  auto prepaid = fs.txs()->ChargeFor(*tx, op);
  if (!prepaid.ok()) return prepaid.status();
  if (!big) return fs.txs()->LogOp(*tx, source, op, *prepaid);
  auto staging = fs.txs()->rm(source).Staging(tx.id());
  const Status dir = staging.ok() ? (*staging)->MakeDir() : staging.status();
  if (!dir.ok()) {
    fs.txs()->Refund(*tx, *prepaid);
    return dir;
  }
  auto stored = [&] {
    // Space as its owner's (writer_identity.h); the staging directory is the daemon's.
    fstx::WriterIdentity as(tx->owner, tx->owner_gid);
    return (*staging)->StoreValue(*value);
  }();
  if (!stored.ok()) {
    fs.txs()->Refund(*tx, *prepaid);
    return stored.status();
  }
  op.stored_value = *stored;
  Status s = fs.txs()->LogOp(*tx, source, op, *prepaid);
  // A refused change's value need not stay either.
  if (!s.ok()) (*staging)->DropValue(*stored);
  return s;
}

Reply Getxattr(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name, size_t size) {
  std::optional<std::string> v;
  int err = ViewXattr(fs, tx, inode, name, &v);
  if (err == 0 && !v) err = ENODATA;
  return err != 0 ? Reply::Error(err) : Reply::XattrBytes(*v, size);
}

int ShownXattrNames(const char* path, std::vector<std::string>* out) {
  std::vector<char> names;
  // The list is filtered, so its size is known only after reading it whole; it may grow
  // between the two calls.
  while (true) {
    ssize_t n = listxattr(path, nullptr, 0);
    if (n < 0) return errno;
    names.resize(static_cast<size_t>(n));
    n = listxattr(path, names.data(), names.size());
    if (n >= 0) {
      names.resize(static_cast<size_t>(n));
      break;
    }
    if (errno != ERANGE) return errno;
  }
  out->clear();
  for (size_t i = 0; i < names.size();) {
    const char* name = names.data() + i;
    size_t len = strnlen(name, names.size() - i);
    if (!IsControlXattr(name)) out->emplace_back(name, len);
    i += len + 1;
  }
  return 0;
}

Reply XattrNamesReply(const std::vector<std::string>& names, size_t size) {
  std::vector<char> shown;
  for (const std::string& name : names)
    shown.insert(shown.end(), name.c_str(), name.c_str() + name.size() + 1);
  return Reply::XattrBytes(std::move(shown), size);
}

namespace {

// The names of the object's xattrs in the transaction's view. 0 or an errno.
int ViewXattrNames(Filesystem& fs, const TxGuard& tx, Inode* inode,
                   std::vector<std::string>* names) {
  if (!IsNew(inode)) {
    NodeFd fd = inode->Fd();
    if (int err = ShownXattrNames(ProcPath(fd.get()).c_str(), names); err != 0) return err;
    if (const fstx::ServedObject* served = tx.ServedFrom(GateKey(inode)))
      *names = served->XattrNames(std::move(*names));
  }
  if (fstx::TxOverlay* ov = fs.txs()->rm(inode->source_index).Overlay(tx.id()))
    *names = ov->Xattrs(ObjectOf(inode), *names);
  return 0;
}

}  // namespace

Reply Listxattr(Filesystem& fs, const TxGuard& tx, Inode* inode, size_t size) {
  std::vector<std::string> names;
  if (int err = ViewXattrNames(fs, tx, inode, &names); err != 0) return Reply::Error(err);
  return XattrNamesReply(names, size);
}

// The namespaces a transaction can record: what the backing filesystem would take as plain
// values, and the two ACLs, which the view keeps in step with the mode. Other system.* names
// have meanings of their own to the backing filesystem.
int CheckName(const char* name) {
  if (IsAclXattr(name)) return 0;
  for (const char* prefix : {"user.", "trusted.", "security."}) {
    size_t n = std::strlen(prefix);
    if (std::strncmp(name, prefix, n) == 0) return name[n] == '\0' ? EINVAL : 0;
  }
  return EOPNOTSUPP;
}

namespace {

// xattr_permission and the capability module's rules, on the attributes the transaction sees,
// before the value is looked at (as the kernel orders them) and before the lock.
int MayChange(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
              const char* name) {
  struct stat st;
  if (int err = TxStat(fs, tx, inode, &st); err != 0) return err;
  return MayChangeXattr(RequesterOf(caller), st, name,
                        OrNull(ViewAcl(fs, tx, inode, kAclAccessXattr)));
}

// Setting an ACL (the kernel has parsed and checked it; so is it here, as it reaches the log):
// the view's mode follows an access ACL, which is not kept at all when the mode says as much
// (posix_acl_update_mode); a default ACL belongs to directories only.
Reply SetAcl(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
             const char* name, std::string_view value) {
  auto reply = [](int err) { return Reply::Error(err); };
  auto acl = PosixAcl::Parse(value);
  if (!acl) return reply(EINVAL);
  const bool access = std::strcmp(name, kAclAccessXattr) == 0;
  if (!access && !S_ISDIR(inode->type)) return reply(acl->empty() ? 0 : EACCES);
  // An access ACL is part of the mode, and a root's mode is the mount's (as for chmod).
  if (access && inode->pinned) return reply(EPERM);
  struct stat st;
  if (int err = TxStat(fs, tx, inode, &st); err != 0) return reply(err);
  std::optional<std::string> cur;
  if (int err = ViewXattr(fs, tx, inode, name, &cur); err != 0) return reply(err);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return reply(path.status().code());
  const int source = inode->source_index;
  TakenLocks taken(fs, tx, source);
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  const fstx::ObjectId object = ObjectOf(inode);
  std::optional<std::string> store;
  mode_t mode = st.st_mode & 07777;
  if (!acl->empty()) {
    bool equivalent = false;
    if (access) mode = ModeAfterAclSet(RequesterOf(caller), st, *acl, &equivalent);
    if (!equivalent) store = acl->Serialize();
  }
  Status s = Status::Ok();
  const bool mode_changes = mode != (st.st_mode & 07777);
  if (store || cur) s = LogXattr(fs, tx, source, object, *path, name, store);
  if (s.ok()) taken.Keep();  // logged, or an ACL equal to the mode: a change made
  if (s.ok() && mode_changes) {
    fstx::Op op;
    op.kind = fstx::OpKind::kSetattr;
    op.object = object;
    op.path = *path;
    op.set_mask = fstx::kSetMode;
    op.mode = mode;
    s = fs.txs()->LogOp(*tx, source, op);
  }
  if (!s.ok()) return reply(Errno(s));
  if (store || cur || mode_changes) {
    TouchTimes(fs, tx, source, object, false);
  } else if (int err = StampUnlogged(fs, tx, source, object); err != 0) {
    // An ACL equal to the mode it has logs nothing, and still stamps the ctime.
    return reply(err);
  }
  if (S_ISDIR(inode->type)) MarkParent(fs, tx, inode);
  return reply(0);
}

// Natively a value the filesystem cannot hold beside the object's other xattrs fails at once
// (ENOSPC, on ext4 past about a block for all of them): so it does here, before any lock,
// rather than at the commit (ProbeXattrs), which refused the whole transaction for it. The set
// the view would have is tried on a probe in the transaction's staging; a set of 256 bytes or
// less fits in any ext4 block, and is not tried.
int FitsBesideTheOthers(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
                        const char* value, size_t size) {
  std::vector<std::string> names;
  if (ViewXattrNames(fs, tx, inode, &names) != 0) return 0;  // the commit's probe asks again
  std::vector<std::pair<std::string, std::string>> all;
  size_t total = std::strlen(name) + size;
  for (const std::string& n : names) {
    if (n == name) continue;
    std::optional<std::string> v;
    if (ViewXattr(fs, tx, inode, n.c_str(), &v) != 0 || !v) continue;
    total += n.size() + v->size();
    all.emplace_back(n, std::move(*v));
  }
  if (total <= 256) return 0;
  all.emplace_back(name, std::string(value, size));
  auto staging = fs.txs()->rm(inode->source_index).Staging(tx.id());
  // Made when first used; the commit's probe asks again if it cannot be.
  if (!staging.ok() || !(*staging)->MakeDir().ok()) return 0;
  return fstx::XattrsFitTogether((*staging)->dir(), S_ISDIR(inode->type), all);
}

}  // namespace

Reply Setxattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
               const char* name, const char* value, size_t size, int flags) {
  auto reply = [](int err) { return Reply::Error(err); };
  if (inode->is_virtual_root()) return reply(EPERM);
  if (int err = CheckName(name); err != 0) return reply(err);
  if (int err = MayChange(caller, fs, tx, inode, name); err != 0) return reply(err);
  std::optional<std::string> cur;
  if (int err = ViewXattr(fs, tx, inode, name, &cur); err != 0) return reply(err);
  if ((flags & XATTR_CREATE) && cur) return reply(EEXIST);
  if (IsAclXattr(name)) {
    if ((flags & XATTR_REPLACE) && !cur) return reply(ENODATA);
    return SetAcl(caller, fs, tx, inode, name, std::string_view(value, size));
  }
  if ((flags & XATTR_REPLACE) && !cur) return reply(ENODATA);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return reply(path.status().code());
  if (int err = FitsBesideTheOthers(fs, tx, inode, name, value, size); err != 0) return reply(err);
  TakenLocks taken(fs, tx, inode->source_index);
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  const fstx::ObjectId object = ObjectOf(inode);
  auto log = [&] {
    Status s = LogXattr(fs, tx, inode->source_index, object, *path, name, std::string(value, size));
    return s.ok() ? 0 : Errno(s);
  };
  // Writes the kernel passes through would not clear a capability (fs/ops/passthrough.h).
  const bool caps = std::strcmp(name, fstx::kCapabilityXattr) == 0;
  if (int err =
          caps && IsCreatedFile(inode) ? fs.passthrough().WithoutWriters(fs, inode, log) : log();
      err != 0)
    return reply(err);
  taken.Keep();
  TouchTimes(fs, tx, inode->source_index, object, false);
  if (S_ISDIR(inode->type)) MarkParent(fs, tx, inode);
  return reply(0);
}

Reply Removexattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
                  const char* name) {
  auto reply = [](int err) { return Reply::Error(err); };
  if (inode->is_virtual_root()) return reply(EPERM);
  // A file's capability is removed by the kernel itself when a write, truncate or chown by
  // anyone drops it (security_inode_killpriv, which asks nothing), and by removexattr(2) only
  // once the kernel found CAP_SETFCAP (cap_inode_removexattr): asking for it again here refused
  // an owner's write inside a transaction, which natively succeeds and drops the capability.
  const bool killpriv = std::strcmp(name, fstx::kCapabilityXattr) == 0;
  if (int err = killpriv ? 0 : MayChange(caller, fs, tx, inode, name); err != 0) return reply(err);
  std::optional<std::string> cur;
  if (int err = ViewXattr(fs, tx, inode, name, &cur); err != 0) return reply(err);
  // Removing an ACL an object does not have succeeds (vfs_remove_acl).
  if (!cur) return reply(IsAclXattr(name) ? 0 : ENODATA);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return reply(path.status().code());
  TakenLocks taken(fs, tx, inode->source_index);
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  const fstx::ObjectId object = ObjectOf(inode);
  Status s = LogXattr(fs, tx, inode->source_index, object, *path, name, std::nullopt);
  if (!s.ok()) return reply(Errno(s));
  taken.Keep();
  TouchTimes(fs, tx, inode->source_index, object, false);
  if (S_ISDIR(inode->type)) MarkParent(fs, tx, inode);
  return reply(0);
}

}  // namespace ktmfs::fs::txops

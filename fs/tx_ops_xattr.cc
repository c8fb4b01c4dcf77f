// Extended attributes inside a transaction (see tx_ops.h): the view's set and removed names
// over the backing object's.
#include <errno.h>
#include <sys/xattr.h>

#include <cstring>
#include <vector>

#include "fs/control.h"
#include "fs/tx_ops.h"
#include "fs/tx_ops_common.h"

namespace ktmfs::fs::txops {
namespace {

bool IsNew(const Inode* inode) {
  return inode->is_tx_version() && inode->object.kind == fstx::ObjectId::Kind::kNew;
}

// The backing object's value: nullopt if it has none (or is new), an errno on failure.
int BackingValue(const Inode* inode, const char* name, std::optional<std::string>* out) {
  out->reset();
  if (IsNew(inode)) return 0;
  ProcPath path(inode->fd);
  ssize_t n = getxattr(path.c_str(), name, nullptr, 0);
  if (n < 0) return errno == ENODATA ? 0 : errno;
  std::string v(static_cast<size_t>(n), '\0');
  n = getxattr(path.c_str(), name, v.data(), v.size());
  if (n < 0) return errno == ENODATA ? 0 : errno;
  v.resize(static_cast<size_t>(n));
  *out = std::move(v);
  return 0;
}

int ViewValue(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              std::optional<std::string>* out) {
  if (fstx::TxOverlay* ov = fs.txs()->rm(inode->source_index).Overlay(tx.id())) {
    auto x = ov->GetXattr(ObjectOf(inode), name);
    if (x.kind == fstx::XattrLookup::Kind::kValue) {
      *out = x.value;
      return 0;
    }
    if (x.kind == fstx::XattrLookup::Kind::kRemoved) {
      out->reset();
      return 0;
    }
  }
  return BackingValue(inode, name, out);
}

}  // namespace

void Getxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              size_t size) {
  std::optional<std::string> v;
  int err = ViewValue(fs, tx, inode, name, &v);
  if (err == 0 && !v) err = ENODATA;
  if (err == 0 && size != 0 && v->size() > size) err = ERANGE;
  if (err != 0) {
    fuse_reply_err(req, err);
  } else if (size == 0) {
    fuse_reply_xattr(req, v->size());
  } else {
    fuse_reply_buf(req, v->data(), v->size());
  }
}

void Listxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, size_t size) {
  std::vector<std::string> names;
  if (!IsNew(inode)) {
    ProcPath path(inode->fd);
    ssize_t n = listxattr(path.c_str(), nullptr, 0);
    std::vector<char> buf(n > 0 ? static_cast<size_t>(n) : 0);
    if (n > 0) n = listxattr(path.c_str(), buf.data(), buf.size());
    if (n < 0) {
      fuse_reply_err(req, errno);
      return;
    }
    for (size_t i = 0; i < static_cast<size_t>(n);) {
      std::string name(buf.data() + i);
      i += name.size() + 1;
      if (!IsControlXattr(name.c_str())) names.push_back(name);
    }
  }
  if (fstx::TxOverlay* ov = fs.txs()->rm(inode->source_index).Overlay(tx.id()))
    names = ov->Xattrs(ObjectOf(inode), names);
  std::vector<char> shown;
  for (const auto& n : names)
    shown.insert(shown.end(), n.c_str(), n.c_str() + n.size() + 1);
  ReplyXattrNames(req, shown, size);
}

// The namespaces a transaction can record: what the backing filesystem would take as plain
// values. ACLs (system.*) change permissions the view does not model.
int CheckName(const char* name) {
  for (const char* prefix : {"user.", "trusted.", "security."}) {
    size_t n = std::strlen(prefix);
    if (std::strncmp(name, prefix, n) == 0) return name[n] == '\0' ? EINVAL : 0;
  }
  return EOPNOTSUPP;
}

namespace {

// xattr_permission and the capability module's rules, on the attributes the transaction sees,
// before the value is looked at (as the kernel orders them) and before the lock.
int MayChange(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name) {
  struct stat st;
  if (int err = TxStat(fs, tx, inode, &st); err != 0) return err;
  return MayChangeXattr(RequesterOf(req), st, name);
}

}  // namespace

void Setxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              const char* value, size_t size, int flags) {
  auto reply = [&](int err) { fuse_reply_err(req, err); };
  if (inode->is_virtual_root()) return reply(EPERM);
  if (int err = CheckName(name); err != 0) return reply(err);
  if (int err = MayChange(req, fs, tx, inode, name); err != 0) return reply(err);
  std::optional<std::string> cur;
  if (int err = ViewValue(fs, tx, inode, name, &cur); err != 0) return reply(err);
  if ((flags & XATTR_CREATE) && cur) return reply(EEXIST);
  if ((flags & XATTR_REPLACE) && !cur) return reply(ENODATA);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return reply(path.status().code());
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  fstx::Op op;
  op.kind = fstx::OpKind::kSetxattr;
  op.object = ObjectOf(inode);
  op.path = *path;
  op.name = name;
  op.value.assign(value, size);
  // The op keeps its value in the daemon's memory until the transaction ends.
  Status s = fs.txs()->ChargeMemory(*tx, op.name.size() + op.value.size());
  if (s.ok()) s = fs.txs()->rm(inode->source_index).LogOp(tx.id(), op);
  if (!s.ok()) return reply(Errno(s));
  TouchTimes(tx, inode->source_index, op.object, false);
  if (S_ISDIR(inode->type)) MarkParent(fs, tx, inode);
  reply(0);
}

void Removexattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode,
                 const char* name) {
  auto reply = [&](int err) { fuse_reply_err(req, err); };
  if (inode->is_virtual_root()) return reply(EPERM);
  if (int err = MayChange(req, fs, tx, inode, name); err != 0) return reply(err);
  std::optional<std::string> cur;
  if (int err = ViewValue(fs, tx, inode, name, &cur); err != 0) return reply(err);
  if (!cur) return reply(ENODATA);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return reply(path.status().code());
  if (int err = LockObject(fs, tx, inode); err != 0) return reply(err);
  fstx::Op op;
  op.kind = fstx::OpKind::kRemovexattr;
  op.object = ObjectOf(inode);
  op.path = *path;
  op.name = name;
  Status s = fs.txs()->rm(inode->source_index).LogOp(tx.id(), op);
  if (!s.ok()) return reply(Errno(s));
  TouchTimes(tx, inode->source_index, op.object, false);
  if (S_ISDIR(inode->type)) MarkParent(fs, tx, inode);
  reply(0);
}

}  // namespace ktmfs::fs::txops

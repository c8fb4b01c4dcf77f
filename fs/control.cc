#include "fs/control.h"

#include <errno.h>
#include <fuse_lowlevel.h>

#include <algorithm>
#include <cstdio>

#include "fs/begin_options.h"
#include "fs/daemon_log.h"
#include "fs/filesystem.h"
#include "fs/invalidator.h"
#include "fs/mount_state.h"
#include "fs/tx_view.h"
#include "ktmfs.h"
#include "ktmfs_config.h"
#include "src/tm_types.h"

// The installed header promises the transaction manager's errno for an unknown outcome.
static_assert(KTMFS_EOUTCOME_UNKNOWN == ktmfs::tm::kOutcomeUnknownErrno);

namespace ktmfs::fs {
namespace {

// The message of the failure the current control request ends with, for FailureReasons (a
// request runs on one thread from start to end).
thread_local std::string t_failure;

int Code(const Status& s) {
  if (!s.ok()) t_failure = s.message();
  return s.ok() ? 0 : (s.code() != 0 ? s.code() : EIO);
}

// Keeps the failure's message for the caller to fetch, and returns the errno.
int Remember(Filesystem& fs, const CallerContext& caller, int err) {
  if (err != 0) {
    fs.reasons().Remember(caller.pid, caller.uid,
                          t_failure.empty() ? std::string(std::strerror(err)) : t_failure);
  }
  t_failure.clear();
  return err;
}

// Commit and rollback failures are worth a line in the daemon's log; the caller gets the errno.
int Report(const char* what, const Status& s) {
  if (!s.ok() && s.code() != ENODATA && s.code() != EPERM)
    DaemonLog(LogLevel::kWarning, std::string(what) + ": " + s.message());
  return Code(s);
}

// A read-only mount (mounted or remounted so) takes no commit: it would change the backing
// directory behind a mount that promises no change. The transaction lives on, to be committed
// once the mount is read-write again, or rolled back.
Status CommitUnlessReadOnly(Filesystem& fs, const CallerContext& caller, const Guid& id) {
  auto ro = IsReadOnly(fs.options().mountpoint);
  if (ro.ok() && *ro) {
    return Status::Error(EROFS, fs.options().mountpoint +
                                    " is mounted read-only: commit after remounting it "
                                    "read-write, or roll back");
  }
  return fs.txs()->Commit(caller, id);
}

// The transaction holding the object a node stands for.
std::optional<Guid> HolderOf(Filesystem& fs, Inode* inode) {
  if (inode->is_virtual_root() || inode->source_index < 0) return std::nullopt;
  if (inode->is_tx_version()) {
    const Guid owner = inode->bound_tx();
    if (fs.txs()->EnterById(owner) && inode->object.kind == fstx::ObjectId::Kind::kNew)
      return owner;
  }
  return fs.txs()
      ->rm(inode->source_index)
      .locks()
      .Holder(
          fstx::ObjectKey{static_cast<uint64_t>(inode->dev), static_cast<uint64_t>(inode->ino)});
}

void CopyId(const Guid& id, char* out) {
  std::string s = id.ToString();
  std::memset(out, 0, KTMFS_ID_SIZE);
  std::memcpy(out, s.data(), std::min<size_t>(s.size(), KTMFS_ID_LEN));
}

// An id field: NUL-terminated within its size; empty means the caller's transaction.
bool ParseId(const char* field, Guid* out) {
  size_t n = strnlen(field, KTMFS_ID_SIZE);
  if (n == KTMFS_ID_SIZE) return false;
  if (n == 0) {
    *out = Guid{};
    return true;
  }
  auto g = Guid::Parse(std::string_view(field, n));
  if (!g) return false;
  *out = *g;
  return true;
}

uint32_t StateCode(tm::TxState s) {
  switch (s) {
    case tm::TxState::kActive:
      return KTMFS_STATE_ACTIVE;
    case tm::TxState::kPreparing:
      return KTMFS_STATE_PREPARING;
    case tm::TxState::kPrepared:
      return KTMFS_STATE_PREPARED;
    case tm::TxState::kCommitting:
      return KTMFS_STATE_COMMITTING;
    case tm::TxState::kCommitted:
      return KTMFS_STATE_COMMITTED;
    case tm::TxState::kRollingBack:
      return KTMFS_STATE_ROLLING_BACK;
    case tm::TxState::kRolledBack:
      return KTMFS_STATE_ROLLED_BACK;
  }
  return 0;
}

template <typename T>
T* Out(std::vector<char>* out) {
  out->assign(sizeof(T), 0);
  return reinterpret_cast<T*>(out->data());
}

template <typename T>
bool In(const ControlIoctl& r, T* v) {
  if (r.in_size != sizeof(T) || r.out_size != sizeof(T) || r.in == nullptr) return false;
  std::memcpy(v, r.in, sizeof(T));
  return true;
}

}  // namespace

namespace {

int ControlSetxattr(Filesystem& fs, const CallerContext& caller, const char* name,
                    const char* value, size_t size) {
  if (std::strcmp(name, KTMFS_XATTR_BEGIN) != 0 && std::strcmp(name, KTMFS_XATTR_COMMIT) != 0 &&
      std::strcmp(name, KTMFS_XATTR_ROLLBACK) != 0) {
    return EPERM;  // the prefix is reserved: no real attribute can be made under it
  }
  if (fs.txs() == nullptr) return EOPNOTSUPP;
  if (std::strcmp(name, KTMFS_XATTR_BEGIN) == 0) {
    auto o = ParseBeginOptions(std::string_view(value != nullptr ? value : "", size));
    if (!o.ok()) return Code(o.status());
    auto id = fs.txs()->Begin(caller, o->scope, o->pid, o->timeout_sec, o->name);
    return Code(id.status());
  }
  if (std::strcmp(name, KTMFS_XATTR_COMMIT) == 0)
    return Report("commit", CommitUnlessReadOnly(fs, caller, Guid{}));
  return Report("rollback", fs.txs()->Rollback(caller, Guid{}));
}

}  // namespace

int HandleControlSetxattr(Filesystem& fs, const CallerContext& caller, const char* name,
                          const char* value, size_t size) {
  t_failure.clear();
  return Remember(fs, caller, ControlSetxattr(fs, caller, name, value, size));
}

int HandleControlGetxattr(Filesystem& fs, const CallerContext& caller, Inode* inode,
                          const char* name, std::string* value) {
  if (fs.txs() == nullptr) return ENODATA;
  if (std::strcmp(name, KTMFS_XATTR_TX) == 0) {
    auto id = fs.txs()->Current(caller.pid);
    if (!id) return ENODATA;
    *value = id->ToString();
    return 0;
  }
  if (std::strcmp(name, KTMFS_XATTR_HOLDER) == 0) {
    auto id = HolderOf(fs, inode);
    if (!id) return ENODATA;
    *value = id->ToString();
    return 0;
  }
  return ENODATA;
}

namespace {

int DispatchIoctl(Filesystem& fs, const ControlIoctl& r, std::vector<char>* out, int* result) {
  *result = 0;
  if (r.cmd == KTMFS_IOC_REASON) {
    ktmfs_reason_args a;
    if (!In(r, &a) || a.flags != 0 || a.reserved != 0) return EINVAL;
    auto* o = Out<ktmfs_reason_args>(out);
    *o = {};
    const std::string m = fs.reasons().Take(r.caller.pid, r.caller.uid);
    std::snprintf(o->text, sizeof o->text, "%s", m.c_str());
    return 0;
  }
  if (r.cmd == KTMFS_IOC_HELLO) {
    ktmfs_hello_args h;
    if (!In(r, &h)) return EINVAL;
    auto* o = Out<ktmfs_hello_args>(out);
    o->abi_version = KTMFS_ABI_VERSION;
    std::snprintf(o->daemon_version, sizeof o->daemon_version, "%s", KTMFS_VERSION);
    return 0;
  }
  if (fs.txs() == nullptr) return ENOTTY;
  TxService& txs = *fs.txs();
  switch (r.cmd) {
    case KTMFS_IOC_BEGIN: {
      ktmfs_begin_args b;
      if (!In(r, &b)) return EINVAL;
      if (b.flags != 0 || b.scope > KTMFS_SCOPE_TREE || b.pid < 0) return EINVAL;
      size_t n = strnlen(b.name, sizeof b.name);
      if (n == sizeof b.name) return EINVAL;
      Scope scope = b.scope == 0 ? Scope::kProcess : static_cast<Scope>(b.scope);
      auto id = txs.Begin(r.caller, scope, b.pid, b.timeout_sec, std::string(b.name, n));
      if (!id.ok()) return Code(id.status());
      auto* o = Out<ktmfs_begin_args>(out);
      *o = b;
      CopyId(*id, o->id);
      return 0;
    }
    case KTMFS_IOC_COMMIT:
    case KTMFS_IOC_ROLLBACK: {
      ktmfs_txid t;
      if (!In(r, &t)) return EINVAL;
      Guid id;
      if (t.flags != 0 || t.reserved != 0 || !ParseId(t.id, &id)) return EINVAL;
      const bool commit = r.cmd == KTMFS_IOC_COMMIT;
      Status s = commit ? CommitUnlessReadOnly(fs, r.caller, id) : txs.Rollback(r.caller, id);
      // An ioctl holds no inode lock, so it can wait for the kernel to drop what the
      // transaction made stale: once commit returns, every reader sees the new state.
      if (fs.invalidator() != nullptr) fs.invalidator()->Drain();
      if (int err = Report(commit ? "commit" : "rollback", s); err != 0) return err;
      *Out<ktmfs_txid>(out) = t;
      return 0;
    }
    case KTMFS_IOC_QUERY:
    case KTMFS_IOC_HOLDER: {
      ktmfs_txid t;
      if (!In(r, &t)) return EINVAL;
      if (t.flags != 0 || t.reserved != 0) return EINVAL;
      auto id = r.cmd == KTMFS_IOC_QUERY ? txs.Current(r.caller.pid) : HolderOf(fs, r.inode);
      if (!id) return ENODATA;
      auto* o = Out<ktmfs_txid>(out);
      CopyId(*id, o->id);
      return 0;
    }
    case KTMFS_IOC_LIST: {
      if (r.in_size != sizeof(ktmfs_list_args) || r.out_size != sizeof(ktmfs_list_args))
        return EINVAL;
      ktmfs_list_args in;
      std::memcpy(&in, r.in, sizeof in);
      if (in.capacity > KTMFS_LIST_MAX) return EINVAL;
      auto list = txs.List();
      std::sort(list.begin(), list.end(),
                [](const auto& a, const auto& b) { return a.begin_time_ns < b.begin_time_ns; });
      auto* o = Out<ktmfs_list_args>(out);
      o->start = in.start;
      o->capacity = in.capacity;
      o->total = static_cast<uint32_t>(list.size());
      for (size_t i = in.start; i < list.size() && o->count < in.capacity; i++) {
        const auto& t = list[i];
        ktmfs_tx_info& e = o->entries[o->count++];
        CopyId(t.id, e.id);
        e.owner_uid = t.owner;
        e.bound_pid = t.pid;
        e.scope = static_cast<uint32_t>(t.scope);
        e.state = StateCode(t.state);
        e.begin_time_ns = t.begin_time_ns;
        e.bytes_logged = t.bytes_logged;
        e.objects_locked = t.objects_locked;
        e.rm_count = t.rm_count;
        e.timeout_sec = t.timeout_sec;
        e.flags = t.apply_pending ? KTMFS_TXF_APPLY_PENDING : 0;
        // Descriptions may name paths: other users' are not shown, except to root.
        if (r.caller.uid == 0 || r.caller.uid == t.owner)
          std::snprintf(e.name, sizeof e.name, "%s", t.name.c_str());
      }
      return 0;
    }
    default:
      return ENOTTY;
  }
}

}  // namespace

int HandleControlIoctl(Filesystem& fs, const ControlIoctl& r, std::vector<char>* out, int* result) {
  t_failure.clear();
  const int err = DispatchIoctl(fs, r, out, result);
  // Asking for the reason does not replace the reason.
  if (r.cmd == KTMFS_IOC_REASON) return err;
  return Remember(fs, r.caller, err);
}

namespace {

void OpIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void* /*arg*/,
             fuse_file_info* /*fi*/, unsigned flags, const void* in_buf, size_t in_bufsz,
             size_t out_bufsz) {
  // Only restricted ioctls reach a FUSE filesystem: sizes come from the command encoding, and
  // fixed-width structures make 32-bit (FUSE_IOCTL_COMPAT) callers encode the same commands.
  if (flags & FUSE_IOCTL_UNRESTRICTED) {
    fuse_reply_err(req, ENOTTY);
    return;
  }
  Filesystem& fs = Fs(req);
  ControlIoctl request{CallerContext::Of(req),
                       fs.Get(ino),
                       cmd,
                       (flags & FUSE_IOCTL_DIR) != 0,
                       in_buf,
                       in_bufsz,
                       out_bufsz};
  std::vector<char> out;
  int result = 0;
  int err = HandleControlIoctl(fs, request, &out, &result);
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_ioctl(req, result, out.empty() ? nullptr : out.data(), out.size());
  }
}

}  // namespace

void AddControlOps(fuse_lowlevel_ops* ops) {
  ops->ioctl = OpIoctl;
}

}  // namespace ktmfs::fs

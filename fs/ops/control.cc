#include "fs/ops/control.h"

#include <errno.h>
#include <fuse_lowlevel.h>

#include <algorithm>
#include <cstdio>

#include "fs/control/control_decode.h"
#include "fs/fuse/invalidator.h"
#include "fs/mount/daemon_log.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/tx_view.h"
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

// The errno a control request ends with is the Status's code; its message is kept for Remember.
int Code(const Status& s) {
  if (!s.ok()) t_failure = s.message();
  return s.code();
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
Status CommitUnlessReadOnly(Filesystem& fs, const CallerContext& caller, const Guid& id,
                            std::string* apply_pending = nullptr) {
  auto ro = fs.MountIsReadOnly();
  if (ro.ok() && *ro) {
    return Status::Error(EROFS, fs.options().mountpoint +
                                    " is mounted read-only: commit after remounting it "
                                    "read-write, or roll back");
  }
  return fs.txs()->Commit(caller, id, apply_pending);
}

// The transaction holding the object a node stands for.
std::optional<Guid> HolderOf(Filesystem& fs, Inode* inode) {
  if (inode->is_virtual_root() || inode->source_index < 0) return std::nullopt;
  if (inode->is_tx_version()) {
    const Guid owner = inode->bound_tx();
    if (fs.txs()->IsLive(owner) && inode->object.kind == fstx::ObjectId::Kind::kNew) return owner;
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

// A description cut to a fixed field, NUL-terminated, and never inside a UTF-8 sequence, so
// that a name that was text stays text.
void CopyName(const std::string& name, char* out, size_t size) {
  size_t n = std::min(name.size(), size - 1);
  // A character is at most 4 bytes: further back, the bytes were no character anyway.
  for (int k = 0;
       k < 3 && n > 0 && n < name.size() && (static_cast<unsigned char>(name[n]) & 0xc0) == 0x80;
       ++k)
    --n;
  std::memcpy(out, name.data(), n);
  out[n] = '\0';
}

uint32_t OutcomeCode(TxService::Ending::Outcome o) {
  switch (o) {
    case TxService::Ending::Outcome::kCommitted:
      return KTMFS_OUTCOME_COMMITTED;
    case TxService::Ending::Outcome::kRolledBack:
      return KTMFS_OUTCOME_ROLLED_BACK;
    case TxService::Ending::Outcome::kCommitFailed:
      return KTMFS_OUTCOME_COMMIT_FAILED;
  }
  return 0;
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

}  // namespace

namespace {

int ControlSetxattr(Filesystem& fs, const CallerContext& caller, const char* name,
                    const char* value, size_t size) {
  auto request = DecodeControlSetxattr(name, std::string_view(value != nullptr ? value : "", size));
  // The prefix is reserved whether or not this mount serves transactions.
  if (!request.ok() && request.status().code() == EPERM) return EPERM;
  if (fs.txs() == nullptr) return EOPNOTSUPP;
  if (!request.ok()) return Code(request.status());
  switch (request->op) {
    case ControlOp::kBegin: {
      const BeginOptions& o = request->begin;
      return Code(fs.txs()->Begin(caller, o.scope, o.pid, o.timeout_sec, o.name).status());
    }
    case ControlOp::kCommit:
      return Report("commit", CommitUnlessReadOnly(fs, caller, Guid{}));
    default:
      return Report("rollback", fs.txs()->Rollback(caller, Guid{}));
  }
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
  auto request = DecodeControlGetxattr(name);
  if (!request.ok()) return Code(request.status());
  auto id = request->op == ControlOp::kQuery ? fs.txs()->Current(caller.pid) : HolderOf(fs, inode);
  if (!id) return ENODATA;
  *value = id->ToString();
  return 0;
}

namespace {

int DispatchIoctl(Filesystem& fs, const ControlIoctl& r, std::vector<char>* out) {
  if (r.cmd == KTMFS_IOC_REASON) {
    ktmfs_reason_args a;
    if (r.in == nullptr || r.in_size != sizeof a || r.out_size != sizeof a) return EINVAL;
    std::memcpy(&a, r.in, sizeof a);
    if (a.flags != 0 || a.reserved != 0) return EINVAL;
    auto* o = Out<ktmfs_reason_args>(out);
    const std::string m = fs.reasons().Take(r.caller.pid, r.caller.uid);
    std::snprintf(o->text, sizeof o->text, "%s", m.c_str());
    return 0;
  }
  // Without transactions only HELLO is answered, whatever the argument of another command.
  if (r.cmd != KTMFS_IOC_HELLO && fs.txs() == nullptr) return ENOTTY;
  auto request = DecodeControlIoctl(r.cmd, r.in, r.in_size, r.out_size);
  if (!request.ok()) return Code(request.status());
  switch (request->op) {
    case ControlOp::kHello: {
      auto* o = Out<ktmfs_hello_args>(out);
      o->abi_version = KTMFS_ABI_VERSION;
      std::snprintf(o->daemon_version, sizeof o->daemon_version, "%s", KTMFS_VERSION);
      return 0;
    }
    case ControlOp::kBegin: {
      const BeginOptions& b = request->begin;
      auto id = fs.txs()->Begin(r.caller, b.scope, b.pid, b.timeout_sec, b.name);
      if (!id.ok()) return Code(id.status());
      // The reply is the request as given, with the new id.
      auto* o = Out<ktmfs_begin_args>(out);
      std::memcpy(o, r.in, sizeof *o);
      CopyId(*id, o->id);
      return 0;
    }
    case ControlOp::kCommit:
    case ControlOp::kRollback: {
      const bool commit = request->op == ControlOp::kCommit;
      TxService& txs = *fs.txs();
      std::string apply_pending;
      Status s = commit ? CommitUnlessReadOnly(fs, r.caller, request->id, &apply_pending)
                        : txs.Rollback(r.caller, request->id);
      // An ioctl holds no inode lock, so it can wait for the kernel to drop what the
      // transaction made stale: once commit returns, every reader sees the new state.
      if (fs.invalidator() != nullptr) fs.invalidator()->Drain();
      if (int err = Report(commit ? "commit" : "rollback", s); err != 0) return err;
      auto* o = Out<ktmfs_txid>(out);
      std::memcpy(o, r.in, sizeof *o);
      if (!apply_pending.empty()) {
        // Committed and durable, yet not all visible: the committer hears it, with the reason.
        o->flags = KTMFS_TXF_APPLY_PENDING;
        fs.reasons().Remember(r.caller.pid, r.caller.uid, apply_pending);
      }
      return 0;
    }
    case ControlOp::kQuery:
    case ControlOp::kHolder: {
      auto id = request->op == ControlOp::kQuery ? fs.txs()->Current(r.caller.pid)
                                                 : HolderOf(fs, r.inode);
      if (!id) return ENODATA;
      CopyId(*id, Out<ktmfs_txid>(out)->id);
      return 0;
    }
    case ControlOp::kList: {
      auto list = fs.txs()->List();
      std::sort(list.begin(), list.end(),
                [](const auto& a, const auto& b) { return a.begin_time_ns < b.begin_time_ns; });
      auto* o = Out<ktmfs_list_args>(out);
      o->start = request->list_start;
      o->capacity = request->list_capacity;
      o->total = static_cast<uint32_t>(list.size());
      for (size_t i = o->start; i < list.size() && o->count < o->capacity; i++) {
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
        e.flags = (t.apply_pending ? KTMFS_TXF_APPLY_PENDING : 0) |
                  (t.outcome_unknown ? KTMFS_TXF_OUTCOME_UNKNOWN : 0);
        // Descriptions may name paths: other users' are not shown, except to root.
        if (r.caller.uid == 0 || r.caller.uid == t.owner) CopyName(t.name, e.name, sizeof e.name);
      }
      return 0;
    }
    case ControlOp::kRecent: {
      const auto recent = fs.txs()->Recent();
      auto* o = Out<ktmfs_recent_args>(out);
      o->start = request->list_start;
      o->capacity = request->list_capacity;
      o->total = static_cast<uint32_t>(recent.size());
      for (size_t i = o->start; i < recent.size() && o->count < o->capacity; i++) {
        const auto& t = recent[i];
        ktmfs_ended_info& e = o->entries[o->count++];
        CopyId(t.id, e.id);
        e.owner_uid = t.owner;
        e.bound_pid = t.pid;
        e.outcome = OutcomeCode(t.outcome);
        e.flags = (t.apply_pending ? KTMFS_TXF_APPLY_PENDING : 0) |
                  (t.recovered ? KTMFS_TXF_RECOVERED : 0);
        e.begin_time_ns = t.begin_time_ns;
        e.end_time_ns = t.end_time_ns;
        // As in the list: descriptions for their owner and root; so too a commit's failure,
        // which may name paths. Why a transaction rolled back is one of the daemon's phrases.
        const bool own = r.caller.uid == 0 || r.caller.uid == t.owner;
        if (own) CopyName(t.name, e.name, sizeof e.name);
        if (own || t.outcome == TxService::Ending::Outcome::kRolledBack)
          CopyName(t.reason, e.reason, sizeof e.reason);
      }
      return 0;
    }
  }
  return ENOTTY;
}

}  // namespace

int HandleControlIoctl(Filesystem& fs, const ControlIoctl& r, std::vector<char>* out) {
  t_failure.clear();
  const int err = DispatchIoctl(fs, r, out);
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
    Send(req, Reply::Error(ENOTTY));
    return;
  }
  Filesystem& fs = Fs(req);
  ControlIoctl request{CallerContext::Of(req), fs.Get(ino), cmd, in_buf, in_bufsz, out_bufsz};
  std::vector<char> out;
  int err = HandleControlIoctl(fs, request, &out);
  // Every command answers through its output structure; the ioctl's own result is 0.
  Send(req, err != 0 ? Reply::Error(err) : Reply::Ioctl(std::move(out)));
}

}  // namespace

void AddControlOps(fuse_lowlevel_ops* ops) {
  ops->ioctl = OpIoctl;
}

}  // namespace ktmfs::fs

#include "fs/control/control_decode.h"

#include <cstring>
#include <string>

namespace ktmfs::fs {
namespace {

static_assert(kMaxBeginNameBytes == KTMFS_NAME_SIZE - 1,
              "both ways of beginning take descriptions of the same length");

Status Malformed(const char* what, const std::string& why) {
  return Status::InvalidArgument(std::string(what) + ": " + why);
}

// The argument of a _IOWR command: exactly one struct in and room for the same back.
template <typename T>
Status Fixed(const char* what, const void* in, size_t in_size, size_t out_size, T* v) {
  if (in_size != sizeof(T) || out_size != sizeof(T) || in == nullptr) {
    return Malformed(what, "the argument is " + std::to_string(in_size) + " bytes in and " +
                               std::to_string(out_size) + " out, not " + std::to_string(sizeof(T)) +
                               " both ways");
  }
  std::memcpy(v, in, sizeof(T));
  return Status::Ok();
}

// A request for one page of a table (the live transactions, the recent endings): only the two
// leading fields are input; the entries are output and may be anything.
template <typename Args>
Result<ControlRequest> Page(const char* what, uint32_t max, ControlOp op, const void* in,
                            size_t in_size, size_t out_size) {
  Args a;
  if (Status s = Fixed(what, in, in_size, out_size, &a); !s.ok()) return s;
  if (a.capacity > max) return Malformed(what, "capacity above " + std::to_string(max));
  ControlRequest r;
  r.op = op;
  r.list_start = a.start;
  r.list_capacity = a.capacity;
  return r;
}

Status CheckTxIdFields(const char* what, const ktmfs_txid& t) {
  if (t.flags != 0 || t.reserved != 0) return Malformed(what, "flags and reserved must be 0");
  return Status::Ok();
}

}  // namespace

Result<ControlRequest> DecodeControlSetxattr(std::string_view name, std::string_view value) {
  ControlRequest r;
  if (name == KTMFS_XATTR_BEGIN) {
    auto o = ParseBeginOptions(value);
    if (!o.ok()) return o.status();
    r.op = ControlOp::kBegin;
    r.begin = std::move(*o);
  } else if (name == KTMFS_XATTR_COMMIT) {
    r.op = ControlOp::kCommit;
  } else if (name == KTMFS_XATTR_ROLLBACK) {
    r.op = ControlOp::kRollback;
  } else {
    return Status::Error(
        EPERM, "the prefix " KTMFS_XATTR_PREFIX " is reserved: no attribute can be set under it");
  }
  return r;
}

Result<ControlRequest> DecodeControlGetxattr(std::string_view name) {
  ControlRequest r;
  if (name == KTMFS_XATTR_TX) {
    r.op = ControlOp::kQuery;
  } else if (name == KTMFS_XATTR_HOLDER) {
    r.op = ControlOp::kHolder;
  } else {
    return Status::Error(ENODATA, "no such control attribute");
  }
  return r;
}

Result<Guid> DecodeTxId(const char (&field)[KTMFS_ID_SIZE]) {
  const size_t n = strnlen(field, KTMFS_ID_SIZE);
  if (n == KTMFS_ID_SIZE) return Malformed("transaction id", "not NUL-terminated");
  if (n == 0) return Guid{};
  auto g = Guid::Parse(std::string_view(field, n));
  if (!g) return Malformed("transaction id", "not a GUID in its printed form");
  return *g;
}

Result<ControlRequest> DecodeControlIoctl(unsigned int cmd, const void* in, size_t in_size,
                                          size_t out_size) {
  ControlRequest r;
  switch (cmd) {
    case KTMFS_IOC_HELLO: {
      ktmfs_hello_args h;
      if (Status s = Fixed("KTMFS_IOC_HELLO", in, in_size, out_size, &h); !s.ok()) return s;
      r.op = ControlOp::kHello;
      return r;
    }
    case KTMFS_IOC_BEGIN: {
      ktmfs_begin_args b;
      if (Status s = Fixed("KTMFS_IOC_BEGIN", in, in_size, out_size, &b); !s.ok()) return s;
      if (b.flags != 0) return Malformed("KTMFS_IOC_BEGIN", "flags must be 0");
      if (b.scope > KTMFS_SCOPE_TREE)
        return Malformed("KTMFS_IOC_BEGIN", "unknown scope " + std::to_string(b.scope));
      if (b.pid < 0) return Malformed("KTMFS_IOC_BEGIN", "negative pid");
      const size_t n = strnlen(b.name, sizeof b.name);
      if (n == sizeof b.name) return Malformed("KTMFS_IOC_BEGIN", "name is not NUL-terminated");
      r.op = ControlOp::kBegin;
      r.begin.scope = b.scope == 0 ? Scope::kProcess : static_cast<Scope>(b.scope);
      r.begin.pid = b.pid;
      r.begin.timeout_sec = b.timeout_sec;
      r.begin.name.assign(b.name, n);
      return r;
    }
    case KTMFS_IOC_COMMIT:
    case KTMFS_IOC_ROLLBACK: {
      const bool commit = cmd == KTMFS_IOC_COMMIT;
      const char* what = commit ? "KTMFS_IOC_COMMIT" : "KTMFS_IOC_ROLLBACK";
      ktmfs_txid t;
      if (Status s = Fixed(what, in, in_size, out_size, &t); !s.ok()) return s;
      if (Status s = CheckTxIdFields(what, t); !s.ok()) return s;
      auto id = DecodeTxId(t.id);
      if (!id.ok()) return id.status().Annotate(what);
      r.op = commit ? ControlOp::kCommit : ControlOp::kRollback;
      r.id = *id;
      return r;
    }
    case KTMFS_IOC_QUERY:
    case KTMFS_IOC_HOLDER: {
      const char* what = cmd == KTMFS_IOC_QUERY ? "KTMFS_IOC_QUERY" : "KTMFS_IOC_HOLDER";
      ktmfs_txid t;
      if (Status s = Fixed(what, in, in_size, out_size, &t); !s.ok()) return s;
      if (Status s = CheckTxIdFields(what, t); !s.ok()) return s;
      r.op = cmd == KTMFS_IOC_QUERY ? ControlOp::kQuery : ControlOp::kHolder;
      return r;
    }
    case KTMFS_IOC_LIST:
      return Page<ktmfs_list_args>("KTMFS_IOC_LIST", KTMFS_LIST_MAX, ControlOp::kList, in, in_size,
                                   out_size);
    case KTMFS_IOC_RECENT:
      return Page<ktmfs_recent_args>("KTMFS_IOC_RECENT", KTMFS_RECENT_MAX, ControlOp::kRecent, in,
                                     in_size, out_size);
    default:
      return Status::Error(ENOTTY, "not a ktmfs ioctl");
  }
}

}  // namespace ktmfs::fs

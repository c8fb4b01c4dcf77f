// Decoding of control requests: the names and values of the reserved "user.ktmfs." extended
// attributes and the argument structs of the ioctls of tools/ktmfs.h, as an unprivileged user
// sends them, become a ControlRequest or an errno with a message. Nothing here needs FUSE or the
// transaction service, so every parser of untrusted control input can be fuzzed and unit tested
// alone (tests/fuzz/control_fuzz.cc, tests/fsctl/control_decode_test.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fs/control/begin_options.h"
#include "ktmfs.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fs {

enum class ControlOp { kHello, kBegin, kCommit, kRollback, kQuery, kHolder, kList, kRecent };

struct ControlRequest {
  ControlOp op = ControlOp::kHello;
  BeginOptions begin;          // kBegin
  Guid id;                     // kCommit, kRollback: nil means the caller's own transaction
  uint32_t list_start = 0;     // kList, kRecent
  uint32_t list_capacity = 0;  // at most KTMFS_LIST_MAX (kList), KTMFS_RECENT_MAX (kRecent)
};

// setxattr of a name under the prefix: begin (with its options parsed from `value`), commit or
// rollback. Any other name is EPERM, as the prefix is reserved; a malformed begin value EINVAL.
Result<ControlRequest> DecodeControlSetxattr(std::string_view name, std::string_view value);

// getxattr of a name under the prefix: the caller's transaction (kQuery) or an object's holder
// (kHolder). Any other name is ENODATA, as for an attribute that does not exist.
Result<ControlRequest> DecodeControlGetxattr(std::string_view name);

// A restricted ioctl as FUSE delivers it: `in` holds in_size bytes (sized by the command's
// encoding, possibly null when 0) and the reply may hold out_size. A command that is not
// ktmfs's is ENOTTY; one of ktmfs's with the wrong direction or size, nonzero flags or
// reserved fields, or a string without its NUL is EINVAL.
Result<ControlRequest> DecodeControlIoctl(unsigned int cmd, const void* in, size_t in_size,
                                          size_t out_size);

// An id field of struct ktmfs_txid: NUL-terminated within KTMFS_ID_SIZE bytes, empty for the
// caller's own transaction (nil), else a GUID in its printed form. EINVAL otherwise.
Result<Guid> DecodeTxId(const char (&field)[KTMFS_ID_SIZE]);

}  // namespace ktmfs::fs

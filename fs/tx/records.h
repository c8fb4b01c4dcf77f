// The records the filesystem RM appends to its own log stream, one transaction at a time
// (format and version in FORMAT.md). Operations are logged as they happen so the overlay can be
// rebuilt and apply can be redone after a crash. Most data is referenced as ranges of staged
// files; small writes (write-data, format version 2) carry their bytes in the record itself.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "log/log.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fstx {

// Version 2 added the write-data op (kind 13), version 3 the relogged record (type 6). Records
// of versions 1 and 2 are still read.
inline constexpr uint8_t kRecordFormatVersion = 3;
// The log record type (log::Record::type) of every record of an fs RM's stream.
inline constexpr uint16_t kFsRecordType = 1;
// Upper bound on the length of a list in a record, so a damaged count cannot make the decoder
// reserve gigabytes before it notices the bytes are not there.
inline constexpr uint32_t kMaxRecordList = 1u << 20;

// How a record names a filesystem object. Existing objects by backing identity (stable across
// renames); objects the transaction creates by a number unique within the transaction, because
// they have no backing inode until apply places them.
struct ObjectId {
  enum class Kind : uint8_t { kNone = 0, kExisting = 1, kNew = 2 };
  Kind kind = Kind::kNone;
  uint64_t dev = 0;     // kExisting
  uint64_t ino = 0;     // kExisting
  uint64_t number = 0;  // kNew

  static ObjectId Existing(uint64_t dev, uint64_t ino) { return {Kind::kExisting, dev, ino, 0}; }
  static ObjectId New(uint64_t number) { return {Kind::kNew, 0, 0, number}; }
  auto operator<=>(const ObjectId&) const = default;
};

enum class OpKind : uint8_t {
  kCreate = 1,  // regular file; its contents are its staged file
  kMkdir = 2,
  kSymlink = 3,
  kMknod = 4,
  kLink = 5,
  kUnlink = 6,
  kRmdir = 7,
  kRename = 8,
  kSetattr = 9,
  kSetxattr = 10,
  kRemovexattr = 11,
  kWriteExtent = 12,
  // A small write carried in the record itself: redo needs nothing from staging, so a
  // transaction of small writes commits without syncing its staged files.
  kWriteData = 13,
};

// Which attributes a kSetattr sets (absolute values, so redoing it is harmless).
enum SetattrMask : uint32_t {
  kSetMode = 1u << 0,
  kSetUid = 1u << 1,
  kSetGid = 1u << 2,
  kSetSize = 1u << 3,
  kSetAtime = 1u << 4,
  kSetMtime = 1u << 5,
};

// Where a transaction keeps an xattr value too big to keep in memory: in its staging's value
// file (TxStaging::StoreValue), at `offset`. Never logged: the record carries the value itself,
// so recovery needs no staging for it.
struct StoredValue {
  uint64_t offset = 0;
  uint32_t size = 0;

  bool operator==(const StoredValue&) const = default;
};

// One operation. Paths are relative to the backing root, as they were when the operation ran;
// only the fields the kind uses are encoded (FORMAT.md lists them per kind).
struct Op {
  OpKind kind = OpKind::kCreate;
  ObjectId object{};    // the object operated on (the new one for create/mkdir/symlink/mknod)
  std::string path{};   // where it is (for rename: the source; for link: the existing name)
  std::string path2{};  // rename target, link's new name
  ObjectId replaced{};  // rename: the object the target name held, if any
  uint32_t mode = 0;    // create kinds, setattr
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t rdev = 0;      // mknod
  std::string target{};   // symlink
  uint32_t flags = 0;     // rename (RENAME_NOREPLACE/EXCHANGE), setxattr (XATTR_CREATE/REPLACE)
  uint32_t set_mask = 0;  // setattr: SetattrMask bits
  uint64_t size = 0;      // setattr
  int64_t atime_ns = 0;   // setattr
  int64_t mtime_ns = 0;   // setattr
  std::string name{};     // xattr name
  std::string value{};    // xattr value (binary)
  // setxattr, in memory only (never encoded): `value` is in the staging's value file here, and
  // is empty once the op is logged (FsResourceManager::LogOp).
  std::optional<StoredValue> stored_value{};
  std::string staged_file{};  // write-extent, create: name of the staged file in the tx's staging
  uint64_t offset = 0;  // write-extent, write-data: same offset in the staged and the final file
  uint64_t length = 0;  // write-extent (write-data: data.size())
  std::string data{};   // write-data

  bool operator==(const Op&) const = default;
};

enum class RecordType : uint8_t {
  kOp = 1,
  kPrepared = 2,
  kCommitted = 3,
  kApplied = 4,
  kAborted = 5,
  // A live transaction's ops, all of them, copied to the stream's end so that the stream's base
  // may pass its earlier records (FsResourceManager::CarryForwardIdle): they replace every op
  // record of the transaction before it.
  kRelogged = 6,
};

struct Record {
  RecordType type = RecordType::kOp;
  Guid tx;
  Op op;                                  // kOp
  std::vector<std::string> staged_files;  // kPrepared: what Sync() made durable
  std::vector<ObjectId> objects;          // kPrepared: every object the ops touch
  uint64_t op_count = 0;                  // kPrepared: ops logged before it (a completeness check)
  std::vector<Op> ops;                    // kRelogged: the transaction's ops so far, in order

  bool operator==(const Record&) const = default;
};

std::vector<std::byte> EncodeRecord(const Record& r);
// The size of EncodeRecord's bytes for an op record of `op`, without encoding it.
uint64_t OpRecordSize(const Op& op);
// Never trusts its input: any damage (short, unknown type or version, bad field, trailing
// bytes) is a Corruption naming the LSN (and the transaction once it has been read).
Result<Record> DecodeRecord(std::span<const std::byte> payload, log::Lsn lsn);

const char* OpKindName(OpKind k);

}  // namespace ktmfs::fstx

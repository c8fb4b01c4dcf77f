#include "fs/tx/records.h"

#include "src/codec.h"

namespace ktmfs::fstx {
namespace {

// One field list per record shape, walked by either an encoder or a decoder, so the two
// directions cannot drift apart.
struct Encoder {
  tm::ByteWriter w;
  bool U8(uint8_t& v) { return w.U8(v), true; }
  bool U32(uint32_t& v) { return w.U32(v), true; }
  bool U64(uint64_t& v) { return w.U64(v), true; }
  bool I64(int64_t& v) { return w.U64(static_cast<uint64_t>(v)), true; }
  bool Text(std::string& s) { return w.Text(s), true; }
  bool Id(Guid& g) { return w.Id(g), true; }
};

// Counts what Encoder would write, without writing it.
struct Sizer {
  uint64_t bytes = 0;
  bool U8(uint8_t&) { return bytes += 1, true; }
  bool U32(uint32_t&) { return bytes += 4, true; }
  bool U64(uint64_t&) { return bytes += 8, true; }
  bool I64(int64_t&) { return bytes += 8, true; }
  bool Text(std::string& s) { return bytes += 4 + s.size(), true; }
  bool Id(Guid&) { return bytes += 16, true; }
};

struct Decoder {
  tm::ByteReader r;
  bool U8(uint8_t& v) { return r.U8(&v); }
  bool U32(uint32_t& v) { return r.U32(&v); }
  bool U64(uint64_t& v) { return r.U64(&v); }
  bool I64(int64_t& v) {
    uint64_t u;
    if (!r.U64(&u)) return false;
    v = static_cast<int64_t>(u);
    return true;
  }
  bool Text(std::string& s) { return r.Text(&s); }
  bool Id(Guid& g) { return r.Id(&g); }
};

template <typename C>
bool ObjectFields(C& c, ObjectId& o) {
  uint8_t kind = static_cast<uint8_t>(o.kind);
  if (!c.U8(kind)) return false;
  o.kind = static_cast<ObjectId::Kind>(kind);
  switch (o.kind) {
    case ObjectId::Kind::kNone:
      return true;
    case ObjectId::Kind::kExisting:
      return c.U64(o.dev) && c.U64(o.ino);
    case ObjectId::Kind::kNew:
      return c.U64(o.number);
  }
  return false;  // unknown kind
}

template <typename C>
bool OpFields(C& c, Op& op) {
  uint8_t kind = static_cast<uint8_t>(op.kind);
  if (!c.U8(kind)) return false;
  op.kind = static_cast<OpKind>(kind);
  if (!ObjectFields(c, op.object) || !c.Text(op.path)) return false;
  switch (op.kind) {
    case OpKind::kCreate:
      return c.U32(op.mode) && c.U32(op.uid) && c.U32(op.gid) && c.Text(op.staged_file);
    case OpKind::kMkdir:
      return c.U32(op.mode) && c.U32(op.uid) && c.U32(op.gid);
    case OpKind::kSymlink:
      return c.U32(op.uid) && c.U32(op.gid) && c.Text(op.target);
    case OpKind::kMknod:
      return c.U32(op.mode) && c.U32(op.uid) && c.U32(op.gid) && c.U64(op.rdev);
    case OpKind::kLink:
      return c.Text(op.path2);
    case OpKind::kUnlink:
    case OpKind::kRmdir:
      return true;
    case OpKind::kRename:
      return c.Text(op.path2) && ObjectFields(c, op.replaced) && c.U32(op.flags);
    case OpKind::kSetattr:
      return c.U32(op.set_mask) && c.U32(op.mode) && c.U32(op.uid) && c.U32(op.gid) &&
             c.U64(op.size) && c.I64(op.atime_ns) && c.I64(op.mtime_ns);
    case OpKind::kSetxattr:
      return c.Text(op.name) && c.Text(op.value) && c.U32(op.flags);
    case OpKind::kRemovexattr:
      return c.Text(op.name);
    case OpKind::kWriteExtent:
      return c.Text(op.staged_file) && c.U64(op.offset) && c.U64(op.length);
    case OpKind::kWriteData:
      if (!c.U64(op.offset) || !c.Text(op.data)) return false;
      op.length = op.data.size();
      return true;
  }
  return false;  // unknown kind
}

template <typename C, typename T, typename F>
bool ListFields(C& c, std::vector<T>& list, F each) {
  uint32_t n = static_cast<uint32_t>(list.size());
  if (!c.U32(n) || n > kMaxRecordList) return false;
  if (list.size() == n) {  // encoding
    for (auto& item : list)
      if (!each(item)) return false;
    return true;
  }
  // Decoding: grow one item at a time, so a damaged count fails at the end of the bytes
  // instead of allocating for items that are not there.
  list.clear();
  for (uint32_t i = 0; i < n; ++i) {
    T item{};
    if (!each(item)) return false;
    list.push_back(std::move(item));
  }
  return true;
}

template <typename C>
bool BodyFields(C& c, Record& r) {
  switch (r.type) {
    case RecordType::kOp:
      return OpFields(c, r.op);
    case RecordType::kPrepared:
      return c.U64(r.op_count) &&
             ListFields(c, r.staged_files, [&](std::string& s) { return c.Text(s); }) &&
             ListFields(c, r.objects, [&](ObjectId& o) { return ObjectFields(c, o); });
    case RecordType::kCommitted:
    case RecordType::kApplied:
    case RecordType::kAborted:
      return true;
    case RecordType::kRelogged:
      return ListFields(c, r.ops, [&](Op& op) { return OpFields(c, op); });
  }
  return false;
}

}  // namespace

std::vector<std::byte> EncodeRecord(const Record& in) {
  Record r = in;  // the field walkers take references; encoding never changes them
  Encoder e;
  uint8_t version = kRecordFormatVersion;
  uint8_t type = static_cast<uint8_t>(r.type);
  e.U8(version);
  e.U8(type);
  e.Id(r.tx);
  BodyFields(e, r);
  return std::move(e.w.bytes());
}

uint64_t OpRecordSize(const Op& op) {
  Sizer z;
  z.bytes = 2 + 16;  // version, type, transaction
  // The walkers only read the fields of what they encode (or count).
  OpFields(z, const_cast<Op&>(op));
  return z.bytes;
}

Result<Record> DecodeRecord(std::span<const std::byte> payload, log::Lsn lsn) {
  std::string where = "fs RM record at LSN " + log::LsnToString(lsn);
  Decoder d{tm::ByteReader(payload)};
  Record r;
  uint8_t version = 0, type = 0;
  if (!d.U8(version) || !d.U8(type) || !d.Id(r.tx))
    return Status::Corruption(where + ": truncated header");
  if (version < 1 || version > kRecordFormatVersion)
    return Status::Corruption(where + ": unknown format version " + std::to_string(version));
  where += " (transaction " + r.tx.ToString() + ")";
  if (type < static_cast<uint8_t>(RecordType::kOp) ||
      type > static_cast<uint8_t>(RecordType::kRelogged))
    return Status::Corruption(where + ": unknown record type " + std::to_string(type));
  r.type = static_cast<RecordType>(type);
  if (!BodyFields(d, r)) return Status::Corruption(where + ": damaged or truncated body");
  if (version == 1 && r.type == RecordType::kOp && r.op.kind == OpKind::kWriteData)
    return Status::Corruption(where + ": write-data op in a version 1 record");
  if (version < 3 && r.type == RecordType::kRelogged)
    return Status::Corruption(where + ": relogged record of version " + std::to_string(version));
  if (!d.r.done()) return Status::Corruption(where + ": trailing bytes");
  return r;
}

const char* OpKindName(OpKind k) {
  switch (k) {
    case OpKind::kCreate:
      return "create";
    case OpKind::kMkdir:
      return "mkdir";
    case OpKind::kSymlink:
      return "symlink";
    case OpKind::kMknod:
      return "mknod";
    case OpKind::kLink:
      return "link";
    case OpKind::kUnlink:
      return "unlink";
    case OpKind::kRmdir:
      return "rmdir";
    case OpKind::kRename:
      return "rename";
    case OpKind::kSetattr:
      return "setattr";
    case OpKind::kSetxattr:
      return "setxattr";
    case OpKind::kRemovexattr:
      return "removexattr";
    case OpKind::kWriteExtent:
      return "write-extent";
    case OpKind::kWriteData:
      return "write-data";
  }
  return "unknown";
}

}  // namespace ktmfs::fstx

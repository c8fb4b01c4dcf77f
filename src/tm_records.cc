#include "src/tm_records.h"

#include <cinttypes>
#include <cstdio>

#include "src/codec.h"

namespace ktmfs::tm {
namespace {

void PutTxHeader(ByteWriter& w, const TxImage& tx) {
  w.Id(tx.id);
  w.U32(tx.owner);
  w.Text(tx.description);
}

bool GetTxHeader(ByteReader& r, TxImage* tx) {
  return r.Id(&tx->id) && r.U32(&tx->owner) && r.Text(&tx->description);
}

void PutTx(ByteWriter& w, const TxImage& tx) {
  PutTxHeader(w, tx);
  w.U8(static_cast<uint8_t>(tx.decision));
  w.U32(static_cast<uint32_t>(tx.enlistments.size()));
  for (const EnlistmentImage& e : tx.enlistments) {
    w.Id(e.rm);
    w.Text(e.rm_name);
    w.Bytes(e.info);
  }
}

bool GetTx(ByteReader& r, TxImage* tx) {
  uint8_t decision;
  uint32_t n;
  if (!GetTxHeader(r, tx) || !r.U8(&decision) || decision > 2 || !r.U32(&n)) return false;
  tx->decision = static_cast<Decision>(decision);
  for (uint32_t i = 0; i < n; ++i) {
    EnlistmentImage e;
    if (!r.Id(&e.rm) || !r.Text(&e.rm_name) || !r.Bytes(&e.info)) return false;
    tx->enlistments.push_back(std::move(e));
  }
  return true;
}

ByteWriter Versioned() {
  ByteWriter w;
  w.U8(kTmFormatVersion);
  return w;
}

Status Damaged(const log::Record& r, const std::string& stream, const char* what) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "stream %s: LSN 0x%" PRIx64 ": TM record type 0x%x: %s",
                stream.c_str(), r.lsn, r.type, what);
  return Status::Corruption(buf);
}

}  // namespace

std::vector<std::byte> EncodeEnlist(const TxImage& tx, const EnlistmentImage& e) {
  ByteWriter w = Versioned();
  PutTxHeader(w, tx);
  w.Id(e.rm);
  w.Text(e.rm_name);
  return std::move(w.bytes());
}

std::vector<std::byte> EncodeEnlistInfo(const Guid& tx, const Guid& rm,
                                        std::span<const std::byte> info) {
  ByteWriter w = Versioned();
  w.Id(tx);
  w.Id(rm);
  w.Bytes(info);
  return std::move(w.bytes());
}

std::vector<std::byte> EncodeCommit(const TxImage& tx) {
  ByteWriter w = Versioned();
  PutTx(w, tx);
  return std::move(w.bytes());
}

std::vector<std::byte> EncodeTxId(const Guid& tx) {
  ByteWriter w = Versioned();
  w.Id(tx);
  return std::move(w.bytes());
}

std::vector<std::byte> EncodeRestartArea(const std::vector<TxImage>& live) {
  ByteWriter w = Versioned();
  w.U32(static_cast<uint32_t>(live.size()));
  for (const TxImage& tx : live)
    PutTx(w, tx);
  return std::move(w.bytes());
}

bool IsTmRecordType(uint16_t type) {
  return type >= static_cast<uint16_t>(TmRecordType::kEnlist) &&
         type <= static_cast<uint16_t>(TmRecordType::kEnd);
}

Result<TmRecord> DecodeTmRecord(const log::Record& r, const std::string& stream) {
  if (!IsTmRecordType(r.type)) return Damaged(r, stream, "unknown record type");
  ByteReader in(r.payload);
  uint8_t version;
  if (!in.U8(&version)) return Damaged(r, stream, "empty payload");
  if (version != kTmFormatVersion) return Damaged(r, stream, "unsupported format version");
  TmRecord out;
  out.type = static_cast<TmRecordType>(r.type);
  bool ok = false;
  switch (out.type) {
    case TmRecordType::kEnlist:
      ok =
          GetTxHeader(in, &out.tx) && in.Id(&out.enlistment.rm) && in.Text(&out.enlistment.rm_name);
      break;
    case TmRecordType::kEnlistInfo:
      ok = in.Id(&out.tx.id) && in.Id(&out.enlistment.rm) && in.Bytes(&out.enlistment.info);
      break;
    case TmRecordType::kCommit:
      ok = GetTx(in, &out.tx) && out.tx.decision == Decision::kCommit;
      break;
    case TmRecordType::kAbort:
    case TmRecordType::kEnd:
      ok = in.Id(&out.tx.id);
      break;
  }
  if (!ok || !in.done()) return Damaged(r, stream, "malformed payload");
  return out;
}

Result<std::vector<TxImage>> DecodeRestartArea(const log::Record& r, const std::string& stream) {
  ByteReader in(r.payload);
  uint8_t version;
  uint32_t n;
  if (!in.U8(&version) || version != kTmFormatVersion || !in.U32(&n))
    return Damaged(r, stream, "restart area: bad header or version");
  std::vector<TxImage> live;
  for (uint32_t i = 0; i < n; ++i) {
    TxImage tx;
    if (!GetTx(in, &tx)) return Damaged(r, stream, "restart area: malformed transaction");
    live.push_back(std::move(tx));
  }
  if (!in.done()) return Damaged(r, stream, "restart area: trailing bytes");
  return live;
}

}  // namespace ktmfs::tm

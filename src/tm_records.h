// The transaction manager's on-disk records and restart area, format version 1. Every payload
// starts with the version byte; the layouts are listed in src/README.md. Changing a layout means
// a new version number and a decoder that still reads the old one.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "log/log.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::tm {

inline constexpr uint8_t kTmFormatVersion = 1;

// Record types of the TM stream (the log's `type` field). 0x74 is 't'.
enum class TmRecordType : uint16_t {
  kEnlist = 0x7401,      // an RM joined a transaction (appended, not flushed)
  kEnlistInfo = 0x7402,  // an RM's recovery bytes for its enlistment (appended, not flushed)
  kCommit = 0x7403,      // the commit decision with every enlistment (flushed before commit)
  kAbort = 0x7404,       // a decision record was written but its flush failed: rolled back
  kEnd = 0x7405,         // every RM finished; the transaction can be forgotten (not flushed)
};

enum class Decision : uint8_t { kNone = 0, kCommit = 1, kAbort = 2 };

struct EnlistmentImage {
  Guid rm;
  std::string rm_name;
  std::vector<std::byte> info;
};

// What the log knows of one transaction: enough to finish it after a crash and to list it.
struct TxImage {
  Guid id;
  uint32_t owner = 0;
  std::string description;
  Decision decision = Decision::kNone;
  std::vector<EnlistmentImage> enlistments;
};

// A decoded TM record. kEnlist fills tx (without decision) and enlistment; kEnlistInfo fills
// tx.id and enlistment.rm/info; kCommit fills tx; kAbort and kEnd fill tx.id.
struct TmRecord {
  TmRecordType type;
  TxImage tx;
  EnlistmentImage enlistment;
};

std::vector<std::byte> EncodeEnlist(const TxImage& tx, const EnlistmentImage& e);
std::vector<std::byte> EncodeEnlistInfo(const Guid& tx, const Guid& rm,
                                        std::span<const std::byte> info);
std::vector<std::byte> EncodeCommit(const TxImage& tx);
std::vector<std::byte> EncodeTxId(const Guid& tx);  // kAbort and kEnd
std::vector<std::byte> EncodeRestartArea(const std::vector<TxImage>& live);

// Errors name the stream and LSN of the damaged record.
Result<TmRecord> DecodeTmRecord(const log::Record& r, const std::string& stream);
bool IsTmRecordType(uint16_t type);
Result<std::vector<TxImage>> DecodeRestartArea(const log::Record& r, const std::string& stream);

}  // namespace ktmfs::tm

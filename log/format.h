// On-disk layout constants and the encoders/decoders of fragment and record headers. The format
// is described in log/FORMAT.md; bump kFormatVersion with any change to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "log/little_endian.h"
#include "log/log.h"

namespace ktmfs::log::format {

inline constexpr uint32_t kFormatVersion = 1;

// Fragment types, after LevelDB's log_format.h plus padding and the cut marker's record kind.
enum FragmentType : uint8_t {
  kZero = 0,  // never written
  kFull = 1,
  kFirst = 2,
  kMiddle = 3,
  kLast = 4,
  kPad = 5,  // fills the rest of a block when a flush ends inside it
};

inline constexpr size_t kFragmentHeaderSize = 32;
inline constexpr size_t kRecordHeaderSize = 40;
// A record starts in a block only if its fragment header and record header fit there.
inline constexpr size_t kMinRecordStart = kFragmentHeaderSize + kRecordHeaderSize;

// Stream 0 holds the log's own records (cut markers); client streams are numbered from 1.
inline constexpr StreamId kInternalStream = 0;
inline constexpr uint16_t kCutMarkerType = 1;
// Record types at or above this are the log's own (restart areas); clients use lower ones.
inline constexpr uint16_t kFirstReservedType = kFirstReservedRecordType;
inline constexpr uint16_t kRestartAreaType = kRestartAreaRecordType;

// A flush writes at most this much per data sync, and at most kMaxInflightFlushes flushes are
// in the kernel at once; together they bound how far ahead recovery looks for evidence of damage.
inline constexpr uint64_t kMaxFlushBytes = 4 << 20;
inline constexpr uint64_t kMaxInflightFlushes = 4;

inline void Put16(std::byte* p, uint16_t v) {
  StoreLe(p, v);
}
inline void Put32(std::byte* p, uint32_t v) {
  StoreLe(p, v);
}
inline void Put64(std::byte* p, uint64_t v) {
  StoreLe(p, v);
}
inline uint16_t Get16(const std::byte* p) {
  return LoadLe<uint16_t>(p);
}
inline uint32_t Get32(const std::byte* p) {
  return LoadLe<uint32_t>(p);
}
inline uint64_t Get64(const std::byte* p) {
  return LoadLe<uint64_t>(p);
}

uint64_t Checksum(std::span<const std::byte> data);

// Integers are little-endian on disk on any host (log/little_endian.h), as FORMAT.md says.
struct FragmentHeader {
  uint64_t checksum = 0;    // XXH3 of bytes [8, 32 + length)
  Lsn address = 0;          // where this fragment lives; rejects data of an earlier lap
  uint32_t flush_back = 0;  // address - the LSN before which all was durable when it was written
  uint32_t epoch = 0;       // the open (session) that wrote it
  uint16_t length = 0;      // bytes of data after the header
  uint8_t type = kZero;
  StreamId stream = 0;  // copy of the record's stream, for messages about damage

  void EncodeTo(std::byte* p) const {
    Put64(p, checksum);
    Put64(p + 8, address);
    Put32(p + 16, flush_back);
    Put32(p + 20, epoch);
    Put16(p + 24, length);
    p[26] = std::byte{type};
    p[27] = std::byte{0};
    Put16(p + 28, stream);
    Put16(p + 30, 0);
  }
  static FragmentHeader DecodeFrom(const std::byte* p) {
    FragmentHeader h;
    h.checksum = Get64(p);
    h.address = Get64(p + 8);
    h.flush_back = Get32(p + 16);
    h.epoch = Get32(p + 20);
    h.length = Get16(p + 24);
    h.type = static_cast<uint8_t>(p[26]);
    h.stream = Get16(p + 28);
    return h;
  }
  Lsn durable_before() const { return address - flush_back; }
};

// Computes and stores the checksum of the fragment at p (header + data).
inline void SealFragment(std::byte* p) {
  uint16_t len = Get16(p + 24);
  Put64(p, Checksum({p + 8, kFragmentHeaderSize - 8 + len}));
}
inline bool FragmentChecksumOk(const std::byte* p) {
  uint16_t len = Get16(p + 24);
  return Get64(p) == Checksum({p + 8, kFragmentHeaderSize - 8 + len});
}

struct RecordHeader {
  StreamId stream = 0;
  uint16_t type = 0;
  uint32_t length = 0;  // payload bytes
  Lsn prev = 0;
  Lsn undo_next = 0;
  Lsn stream_prev = 0;
  uint64_t checksum = 0;  // XXH3 of the first 32 header bytes and the payload

  void EncodeTo(std::byte* p) const {
    Put16(p, stream);
    Put16(p + 2, type);
    Put32(p + 4, length);
    Put64(p + 8, prev);
    Put64(p + 16, undo_next);
    Put64(p + 24, stream_prev);
    Put64(p + 32, checksum);
  }
  static RecordHeader DecodeFrom(const std::byte* p) {
    RecordHeader h;
    h.stream = Get16(p);
    h.type = Get16(p + 2);
    h.length = Get32(p + 4);
    h.prev = Get64(p + 8);
    h.undo_next = Get64(p + 16);
    h.stream_prev = Get64(p + 24);
    h.checksum = Get64(p + 32);
    return h;
  }
};

// The record checksum: XXH3 of the first 32 header bytes, seeded with the XXH3 of the payload
// (given in two parts), so the payload's hash can be taken before the header is known.
uint64_t PayloadHash(std::span<const std::byte> a, std::span<const std::byte> b = {});
uint64_t RecordChecksum(const std::byte* header32, uint64_t payload_hash);

}  // namespace ktmfs::log::format

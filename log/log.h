// A CLFS-style multiplexed log: one base file plus fixed-size containers used as a ring, several
// named streams interleaved in it, records addressed by LSN, appends collected in marshalling
// buffers and made durable by group-committed flushes. The on-disk format is log/FORMAT.md.
//
// Thread safety: every method of Log and Stream may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "log/io.h"
#include "log/status.h"

namespace ktmfs::log {

// A position in the log's address space: logical container number * container size + byte
// offset. It only grows (containers are recycled, logical numbers are not). LSNs of one log are
// comparable across its streams; LSNs of different logs are not.
using Lsn = uint64_t;
inline constexpr Lsn kInvalidLsn = 0;  // no record ever has LSN 0
inline constexpr Lsn kMaxLsn = UINT64_MAX;

using StreamId = uint16_t;

// "0x1f000", the one way LSNs appear in messages and tools.
std::string LsnToString(Lsn lsn);

// Record types from kFirstReservedRecordType up belong to the log; Append refuses them. Restart
// areas come back from reads with kRestartAreaRecordType.
inline constexpr uint16_t kFirstReservedRecordType = 0xFF00;
inline constexpr uint16_t kRestartAreaRecordType = 0xFFFF;

struct Record {
  Lsn lsn = kInvalidLsn;
  StreamId stream = 0;
  uint16_t type = 0;                  // the client's record type
  Lsn prev_lsn = kInvalidLsn;         // the client's back chain (e.g. one transaction's records)
  Lsn undo_next_lsn = kInvalidLsn;    // ARIES undo-next, for compensation records
  Lsn stream_prev_lsn = kInvalidLsn;  // previous record of the same stream, set by the log
  std::vector<std::byte> payload;
};

struct LogOptions {
  // These three apply when the log is created; an existing log keeps what its base file says.
  uint32_t block_size = 4096;         // 512 .. 32768, a power of two (the sector size or more)
  uint64_t container_size = 4 << 20;  // a multiple of the block size
  uint32_t initial_containers = 2;
  uint32_t max_containers = 256;  // the ring grows up to this, then appends get "log full"
  // The share of the most space the log may take (max_containers * container_size) that only
  // appends with AppendArgs::use_reserve, restart areas and the log's own records may fill
  // (0 to 50), at most one container. Ordinary appends get "log full" while that much is
  // still free, so the records that end transactions, and the restart areas that let the log
  // be truncated, always fit (unless they themselves use it up). At most a container because
  // those records are small, and because a reserve larger than the free part of the ring makes
  // the log grow (preallocating containers) before it needs to, which on a full disk fails
  // ordinary appends that would have fit. Not stored: it applies to this open.
  uint32_t reserve_percent = 0;
  // Flushes in the kernel at once (1 to 4). More overlaps data syncs but makes smaller groups;
  // on the machines measured so far (tests/bench/log_bench) 1 commits fastest.
  uint32_t max_inflight_flushes = 1;
  // For inspection (ktmfs-log): open and scan without writing a byte. Never creates a log;
  // everything that would write (appends, flushes of new data, restart areas, new streams, base
  // LSNs) fails with EROFS, and Close writes nothing.
  bool read_only = false;
};

struct LogStats {
  uint64_t appends = 0;
  uint64_t flushes_requested = 0;
  uint64_t syncs = 0;        // data syncs actually issued
  uint64_t flush_nanos = 0;  // time spent writing and syncing flushes, summed over flushes
  uint64_t bytes_written = 0;
  // What the scan at open found.
  uint64_t torn_tail_cut_in_block = 0;  // 1 if the tail was cut inside a block
  uint64_t cut_gaps_skipped = 0;        // ends of blocks cut by earlier sessions
  uint64_t damaged_ranges = 0;          // damage before the tail (reads there fail)
};

// The shape of a log as its base file records it.
struct LogGeometry {
  uint32_t format_version;
  uint32_t block_size;
  uint64_t container_size;
  uint32_t containers;  // in the ring now
  uint32_t max_containers;
  Lsn start_lsn;  // the oldest byte still needed by some stream
};

// A stretch of the log that the open scan found damaged, with valid records after it. Reading
// into it is a Corruption error naming the stream and LSN; reading can resume at `end`.
struct DamagedRange {
  StreamId stream;  // as the damaged header says: a best guess
  Lsn begin;
  Lsn end;
};

struct StreamInfo {
  StreamId id;
  std::string name;
  Lsn base_lsn;
  Lsn restart_lsn;
  Lsn last_lsn;
};

// Reads records one at a time; damage is an error naming stream and LSN, never a bad record.
class Cursor {
 public:
  virtual ~Cursor() = default;
  // Sets *out and returns true, or returns false at the end.
  virtual Result<bool> Next(Record* out) = 0;
};

// Space set aside with Stream::Reserve; an append that draws on it cannot fail with "log full".
// Unused space is given back when it is destroyed (which may happen after the Log is gone).
class Reservation {
 public:
  virtual ~Reservation() = default;
  virtual uint64_t remaining() const = 0;
};

class Stream {
 public:
  virtual ~Stream() = default;
  virtual StreamId id() const = 0;
  virtual const std::string& name() const = 0;

  struct AppendArgs {
    uint16_t type = 0;
    std::span<const std::byte> payload = {};
    Lsn prev_lsn = kInvalidLsn;
    Lsn undo_next_lsn = kInvalidLsn;
    // May fill the reserve (LogOptions::reserve_percent): for records that end work already
    // begun (commit, rollback, recovery), never for records of new work.
    bool use_reserve = false;
  };
  // Appends to the marshalling buffers (not yet durable) and returns the record's LSN.
  virtual Result<Lsn> Append(const AppendArgs& args, Reservation* reservation = nullptr) = 0;
  virtual Result<std::unique_ptr<Reservation>> Reserve(uint64_t payload_bytes) = 0;
  // Makes every record up to `lsn` durable (of every stream of the log: flushes are log-wide).
  virtual Status Flush(Lsn lsn) = 0;

  virtual Result<Record> Read(Lsn lsn) = 0;
  virtual std::unique_ptr<Cursor> ReadForward(Lsn from) = 0;
  enum class Chain { kStreamPrevious, kPrevious, kUndoNext };
  virtual std::unique_ptr<Cursor> ReadBackward(Lsn from, Chain chain) = 0;

  // Writes a checkpoint record and flushes; optionally advances the base LSN at the same time.
  virtual Result<Lsn> WriteRestartArea(std::span<const std::byte> payload,
                                       Lsn new_base_lsn = kInvalidLsn) = 0;
  // The newest restart area; NotFound if none was ever written.
  virtual Result<Record> ReadRestartArea() = 0;
  // The restart area written before the one at `restart_lsn`, for when that one is damaged.
  virtual Result<Record> ReadPreviousRestartArea(Lsn restart_lsn) = 0;

  // Records before `lsn` are no longer needed; their space is reused once every stream agrees.
  // The new base reaches the base file with its next write (a restart area, a new stream,
  // Close, or when the ring needs the space); after a crash before that, the old base holds.
  virtual Status SetBaseLsn(Lsn lsn) = 0;
  virtual Lsn base_lsn() const = 0;
  virtual Lsn last_lsn() const = 0;  // kInvalidLsn if the stream is empty
};

class Log {
 public:
  virtual ~Log() = default;
  // Opens the log kept in `storage` (which must outlive it), creating it if allowed; scans the
  // tail and cuts a torn or corrupt end at the last valid record.
  static Result<std::unique_ptr<Log>> Open(Storage* storage, const LogOptions& options,
                                           bool create_if_missing = true);

  // Creates or opens a named stream. A dedicated log is simply a log with one stream.
  virtual Result<Stream*> OpenStream(const std::string& name, bool create = true) = 0;
  virtual std::vector<StreamInfo> Streams() const = 0;

  virtual Status Flush(Lsn lsn = kMaxLsn) = 0;
  virtual Lsn flushed_lsn() const = 0;
  virtual Lsn end_lsn() const = 0;

  // Every record of every stream in LSN order, from `from` (what recovery needs).
  virtual std::unique_ptr<Cursor> ReadAll(Lsn from) = 0;
  virtual LogStats stats() const = 0;
  virtual LogGeometry geometry() const = 0;
  virtual std::vector<DamagedRange> damaged_ranges() const = 0;

  // Flushes everything and writes the base file; the Log must not be used afterwards.
  virtual Status Close() = 0;
};

}  // namespace ktmfs::log

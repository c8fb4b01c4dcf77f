// The log's implementation classes, shared by log_open.cc (open, recovery scan, base file),
// log_append.cc (marshalling, space, group commit) and log_read.cc (records and cursors).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "log/base_file.h"
#include "log/format.h"
#include "log/log.h"
#include "log/wake_word.h"

namespace ktmfs::log {

class LogImpl;

// Marshalling buffers start on a page, so with O_DIRECT they go to the kernel without a copy.
// Growing one does not zero the new bytes (for a large record that was a pass over its space,
// under the log's mutex, before the payload was copied over it): whoever lays out the bytes
// writes every one of them, zeros included (AppendLocked, PadTail).
template <typename T>
struct PageAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{4096};
  PageAlignedAllocator() = default;
  template <typename U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) == 0) {
      ::new (static_cast<void*>(p)) U;  // default-initialized: left as it is
    } else {
      ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
  }
  bool operator==(const PageAlignedAllocator&) const { return true; }
};
using AlignedBytes = std::vector<std::byte, PageAlignedAllocator<std::byte>>;

class StreamImpl : public Stream {
 public:
  StreamImpl(LogImpl* log, StreamId id, std::string name)
      : log_(log), id_(id), name_(std::move(name)) {}
  StreamId id() const override { return id_; }
  const std::string& name() const override { return name_; }
  Result<Lsn> Append(const AppendArgs& args, Reservation* reservation) override;
  Result<std::unique_ptr<Reservation>> Reserve(uint64_t payload_bytes) override;
  Status Flush(Lsn lsn) override;
  Result<Record> Read(Lsn lsn) override;
  std::unique_ptr<Cursor> ReadForward(Lsn from) override;
  std::unique_ptr<Cursor> ReadBackward(Lsn from, Chain chain) override;
  Result<Lsn> WriteRestartArea(std::span<const std::byte> payload, Lsn new_base_lsn) override;
  Result<Record> ReadRestartArea() override;
  Result<Record> ReadPreviousRestartArea(Lsn restart_lsn) override;
  Status SetBaseLsn(Lsn lsn) override;
  Lsn base_lsn() const override;
  Lsn last_lsn() const override;

 private:
  LogImpl* log_;
  StreamId id_;
  std::string name_;
};

struct StreamState {
  StreamId id = 0;
  std::string name;
  Lsn base = kInvalidLsn;
  Lsn restart = kInvalidLsn;
  Lsn prev_restart = kInvalidLsn;
  Lsn last = kInvalidLsn;
  std::unique_ptr<StreamImpl> handle;
};

// A range of the log that holds no readable record: damage found by the open scan (an error for
// readers) or the unused end of a block where an earlier session's torn tail was cut (skipped).
struct LsnRange {
  Lsn begin;
  Lsn end;
  StreamId stream;  // for damage: the stream named by the damaged header (unverified)
};

// Reads blocks of the log through a window cache; one per cursor or read.
class BlockReader {
 public:
  explicit BlockReader(LogImpl* log, size_t window = 256 << 10) : log_(log), window_(window) {}
  // The block starting at block_start (a multiple of the block size).
  Result<const std::byte*> Block(Lsn block_start);

 private:
  LogImpl* log_;
  size_t window_;
  Lsn begin_ = 0;
  Lsn end_ = 0;
  std::vector<std::byte> buf_;
};

// A record read from the log, with where the next one may start.
struct ParsedRecord {
  Record record;
  Lsn next = 0;            // first byte after its last fragment
  uint32_t epoch = 0;      // of its first fragment
  Lsn durable_before = 0;  // of its first fragment
};

// Where the committers of one flush sleep: the flush's group while it gathers, then while it is
// in the kernel.
struct FlushSlot {
  WakeWord word;
  std::atomic<uint32_t> sleepers{0};  // raised under the log's mutex, lowered without it
};

// One flush between its issue and its completion.
struct InFlight {
  uint64_t seq = 0;  // its slot is slots_[seq % kFlushSlots]
  Lsn start = 0;
  Lsn end = 0;
  bool done = false;
  Status status;
};

class LogImpl : public Log {
 public:
  explicit LogImpl(Storage* storage) : storage_(storage), anchor_(std::make_shared<Anchor>(this)) {}
  ~LogImpl() override;

  Result<Stream*> OpenStream(const std::string& name, bool create) override;
  std::vector<StreamInfo> Streams() const override;
  Status Flush(Lsn lsn) override;
  Lsn flushed_lsn() const override;
  Lsn end_lsn() const override;
  std::unique_ptr<Cursor> ReadAll(Lsn from) override;
  LogStats stats() const override;
  LogGeometry geometry() const override;
  std::vector<DamagedRange> damaged_ranges() const override;
  Status Close() override;

  // --- log_open.cc
  Status Create(const LogOptions& options);
  Status Load();
  Status OpenContainers();
  Status Recover();
  Status StoreBaseLocked();
  void UpdateStartLocked();

  // --- log_append.cc
  struct Payload {
    std::span<const std::byte> prefix;  // restart areas put the previous restart LSN here
    std::span<const std::byte> body;
    size_t size() const { return prefix.size() + body.size(); }
  };
  Result<Lsn> AppendRecord(StreamId stream, uint16_t type, const Payload& payload, Lsn prev,
                           Lsn undo_next, Reservation* reservation, bool use_reserve);
  // A payload copy left for after the lock is released.
  struct CopyJob {
    std::byte* dst;
    const std::byte* src;
    size_t n;
  };
  static constexpr size_t kDeferCopyBytes = 8 << 10;
  Result<Lsn> AppendLocked(StreamId stream, uint16_t type, const Payload& payload, Lsn prev,
                           Lsn undo_next, Reservation* reservation, bool use_reserve,
                           uint64_t payload_hash, std::vector<CopyJob>* deferred);
  Result<std::unique_ptr<Reservation>> Reserve(uint64_t payload_bytes);
  void Unreserve(uint64_t bytes);
  // `keep`: bytes past needed_end that must stay free (the reserve, for ordinary appends).
  Status MakeRoomLocked(Lsn needed_end, uint64_t keep = 0);
  Status GrowLocked();
  // Ends a sealed buffer at a block boundary (a PAD fragment, or zeros if too little room).
  void PadTail(AlignedBytes& data, Lsn start, Lsn data_end) const;
  // Slots whose sleepers are to be woken once the lock is released go to *wake.
  Status FlushLocked(std::unique_lock<std::mutex>& lock, Lsn lsn, std::vector<WakeWord*>* wake);
  FlushSlot& SlotForLocked(Lsn target);
  // Bumps a slot's word; returns how many slept on it (then its word is in *wake).
  size_t ReleaseSlotLocked(FlushSlot& slot, std::vector<WakeWord*>* wake);
  bool GroupReadyLocked() const;
  void WakeAllWaitersLocked();
  void LeadLocked(std::unique_lock<std::mutex>& lock, std::vector<WakeWord*>* wake);
  Status WriteOut(InFlight* flush, AlignedBytes& data, Lsn durable,
                  const std::vector<std::pair<Lsn, Lsn>>& presealed);
  uint64_t WorstCaseBytes(uint64_t payload_bytes) const;

  // --- log_read.cc
  // Reads bytes at LSNs through the container map (never across the ring's end).
  Status ReadBytes(Lsn lsn, std::span<std::byte> out);
  // Parses the record whose first fragment is at lsn; damage and absence are errors.
  // Decodes the fragment header at pos (in the block at `block`) into *h; true if it is whole.
  bool CheckFragment(const std::byte* block, Lsn pos, format::FragmentHeader* h) const;
  Result<ParsedRecord> ParseRecordAt(BlockReader* reader, Lsn lsn, uint32_t min_epoch);
  // A record of `stream` as a client sees it, after making it durable if it is not yet.
  Result<Record> ReadStreamRecord(StreamId stream, Lsn lsn);
  std::unique_ptr<Cursor> NewForwardCursor(Lsn from, bool one_stream, StreamId stream);
  const LsnRange* FindRange(const std::vector<LsnRange>& ranges, Lsn lsn) const;
  std::string StreamName(StreamId id) const;  // for messages; takes mu_
  std::string StreamNameLocked(StreamId id) const;

  File* FileForLocked(uint64_t logical);
  Lsn BlockFloor(Lsn lsn) const { return lsn / block_ * block_; }
  Lsn BlockCeil(Lsn lsn) const { return (lsn + block_ - 1) / block_ * block_; }
  Lsn start_lsn() const;

  // Lets reservations find their log, or learn that it is gone.
  struct Anchor {
    explicit Anchor(LogImpl* l) : log(l) {}
    std::mutex mu;
    LogImpl* log;
  };

  Storage* storage_;
  std::shared_ptr<Anchor> anchor_;
  uint32_t block_ = 0;
  uint64_t container_ = 0;

  mutable std::mutex mu_;
  std::condition_variable flushed_cv_;
  std::unique_ptr<BaseFile> base_file_;
  BaseImage image_;                                  // what the base file holds (or is about to)
  std::map<uint32_t, std::unique_ptr<File>> files_;  // container id -> file
  uint32_t epoch_ = 0;
  Lsn tail_at_open_ = 0;

  // Marshalling buffer: bytes [buf_start_, end_) not yet handed to a flush.
  AlignedBytes buf_;
  Lsn buf_start_ = 0;
  std::vector<std::pair<Lsn, Lsn>> presealed_;  // records in buf_ that their appenders seal
  Lsn end_ = 0;
  Lsn flushed_ = 0;
  // flushed_, for sleepers to see their record durable without taking the mutex.
  std::atomic<Lsn> durable_{0};
  // Flushes issued and not yet folded into flushed_, oldest first.
  std::deque<std::unique_ptr<InFlight>> inflight_;
  size_t max_inflight_ = 1;
  // Payload copies still running, by buffer generation (gen_ counts seals).
  uint64_t gen_ = 0;
  std::map<uint64_t, int> copies_;
  std::condition_variable copy_cv_;
  // Committers sleep in the slot of the flush their record goes out with (see Flush). Live
  // flushes (those in flight and the gathering one) never share a slot.
  static constexpr size_t kFlushSlots = 8;
  static_assert(kFlushSlots > format::kMaxInflightFlushes + 1);
  std::array<FlushSlot, kFlushSlots> slots_;
  uint64_t next_seq_ = 0;  // the gathering group's flush
  // Gathering the next group (see Flush): callers whose records are in no flush yet, how many to
  // wait for (0: none), until when, and which sleeper keeps that deadline (0: none).
  size_t joined_ = 0;
  size_t gather_size_ = 0;
  std::chrono::steady_clock::time_point gather_until_;
  uint64_t timer_ = 0;
  uint64_t timer_ids_ = 0;
  std::chrono::steady_clock::duration last_sync_{};  // how long the last flush's write took
  Status failed_;  // sticky: after a failed write nothing more is written
  bool closed_ = false;
  bool read_only_ = false;
  uint64_t reserved_ = 0;
  // LogOptions::reserve_percent of the most space the log may take, in bytes.
  uint64_t reserve_ = 0;
  Lsn pending_cut_ = kInvalidLsn;  // a cut marker to write before this session's first record

  std::map<StreamId, StreamState> streams_;
  std::vector<LsnRange> damaged_;
  std::vector<LsnRange> gaps_;
  LogStats stats_;
};

// Restart areas carry the previous restart LSN before the client's payload.
inline constexpr size_t kRestartPrefix = 8;

}  // namespace ktmfs::log

// Appending: records are laid out in fragments in the marshalling buffer under the log's mutex;
// a flush seals the buffer, and the one thread that flushes (the leader) stamps, checksums,
// writes and syncs it while later appends collect in a new buffer for the next flush. Threads
// waiting for an LSN the current flush covers just wait for it (group commit).
#include <algorithm>
#include <cassert>
#include <chrono>

#include "log/log_impl.h"

namespace ktmfs::log {

using format::FragmentHeader;
using format::kFragmentHeaderSize;
using format::kMinRecordStart;
using format::kRecordHeaderSize;

namespace {

// The append buffer's allocation is kept from one flush to the next, up to this size. A burst
// of big records (a transaction's xattr values) grows it far beyond: kept, that would hold the
// burst's memory for the life of the daemon.
constexpr size_t kKeptBufferBytes = 4 << 20;

class ReservationImpl : public Reservation {
 public:
  ReservationImpl(std::shared_ptr<LogImpl::Anchor> anchor, uint64_t bytes)
      : anchor_(std::move(anchor)), remaining_(bytes) {}
  // A reservation may outlive its log; then there is nothing to give back.
  ~ReservationImpl() override {
    std::lock_guard lock(anchor_->mu);
    if (anchor_->log) anchor_->log->Unreserve(remaining_);
  }
  uint64_t remaining() const override { return remaining_; }
  uint64_t remaining_bytes_for_log() const { return remaining_; }
  void Take(uint64_t n) { remaining_ -= n; }

 private:
  std::shared_ptr<LogImpl::Anchor> anchor_;
  uint64_t remaining_;
};

// Calls f(address, type, offset, length) for each fragment of a record of `total` bytes
// (record header included) placed at `pos`; returns the end.
template <typename F>
Lsn Layout(uint32_t block, Lsn pos, uint64_t total, F&& f) {
  const uint64_t room = block - pos % block;
  if (room < kMinRecordStart) pos += room;
  uint64_t done = 0;
  bool first = true;
  while (true) {
    const uint64_t avail = block - pos % block - kFragmentHeaderSize;
    const uint64_t n = std::min(avail, total - done);
    const bool last = done + n == total;
    uint8_t type =
        first ? (last ? format::kFull : format::kFirst) : (last ? format::kLast : format::kMiddle);
    f(pos, type, done, n);
    pos += kFragmentHeaderSize + n;
    done += n;
    first = false;
    if (last) return pos;
  }
}

}  // namespace

uint64_t LogImpl::WorstCaseBytes(uint64_t payload_bytes) const {
  const uint64_t per = block_ - kFragmentHeaderSize;
  const uint64_t frags = (kRecordHeaderSize + payload_bytes + per - 1) / per;
  return (frags + 2) * block_;
}

Result<Lsn> LogImpl::AppendRecord(StreamId stream, uint16_t type, const Payload& payload, Lsn prev,
                                  Lsn undo_next, Reservation* reservation, bool use_reserve) {
  // The passes over the payload happen without the lock: hashing here, and for large records
  // the copy into the buffer after the space is taken (many committers copy at once).
  const uint64_t payload_hash = format::PayloadHash(payload.prefix, payload.body);
  const bool defer = payload.size() >= kDeferCopyBytes;
  std::unique_lock lock(mu_);
  if (!failed_.ok()) return failed_;
  if (closed_) return Status::InvalidArgument("log is closed");
  // The buffer must not move while others copy into it.
  const uint64_t need = WorstCaseBytes(payload.size()) + WorstCaseBytes(8);
  while (copies_.count(gen_) && buf_.size() + need > buf_.capacity())
    copy_cv_.wait(lock);
  if (pending_cut_ != kInvalidLsn) {
    // First append of a session whose open cut a torn tail inside a block: say so first (see
    // Recover), in the same flush as the record.
    std::byte cut[8];
    format::Put64(cut, pending_cut_);
    auto marker = AppendLocked(format::kInternalStream, format::kCutMarkerType, {{}, cut}, 0, 0,
                               nullptr, true, format::PayloadHash(cut), nullptr);
    if (!marker.ok()) return marker.status();
    pending_cut_ = kInvalidLsn;
  }
  std::vector<CopyJob> jobs;
  auto lsn = AppendLocked(stream, type, payload, prev, undo_next, reservation, use_reserve,
                          payload_hash, defer ? &jobs : nullptr);
  if (!lsn.ok() || jobs.empty()) return lsn;
  // A large record's fragments are also sealed here, by its own thread, rather than by the
  // flush's leader, which would checksum every large record of its group alone. Their D (see
  // log/FORMAT.md) is what is durable now: no more than when their flush is issued, so still true.
  const Lsn durable = flushed_;
  std::vector<std::pair<std::byte*, Lsn>> frags;
  if (end_ - durable <= UINT32_MAX) {
    presealed_.push_back({*lsn, end_});
    for (Lsn p = *lsn; p < end_;) {
      std::byte* frag = buf_.data() + (p - buf_start_);
      frags.push_back({frag, p});
      p += kFragmentHeaderSize + format::Get16(frag + 24);
    }
  }
  const uint64_t gen = gen_;
  copies_[gen]++;
  lock.unlock();
  for (const CopyJob& j : jobs)
    std::memcpy(j.dst, j.src, j.n);
  for (auto [frag, at] : frags) {
    format::Put32(frag + 16, uint32_t(at - durable));
    format::SealFragment(frag);
  }
  lock.lock();
  if (--copies_[gen] == 0) {
    copies_.erase(gen);
    copy_cv_.notify_all();
  }
  return lsn;
}

Result<Lsn> LogImpl::AppendLocked(StreamId stream, uint16_t type, const Payload& payload, Lsn prev,
                                  Lsn undo_next, Reservation* reservation, bool use_reserve,
                                  uint64_t payload_hash, std::vector<CopyJob>* deferred) {
  if (payload.size() > UINT32_MAX) {
    return Status::InvalidArgument("record of " + std::to_string(payload.size()) +
                                   " bytes is too large");
  }
  const uint64_t total = kRecordHeaderSize + payload.size();
  StreamState* st = nullptr;
  if (stream != format::kInternalStream) {
    auto it = streams_.find(stream);
    if (it == streams_.end()) return Status::NotFound("no stream " + std::to_string(stream));
    st = &it->second;
  }
  const Lsn new_end = Layout(block_, end_, total, [](Lsn, uint8_t, uint64_t, uint64_t) {});
  const uint64_t charge = new_end - end_ + block_;  // the block covers a flush's padding after it
  if (reservation != nullptr) {
    auto* r = static_cast<ReservationImpl*>(reservation);
    if (r->remaining() < charge) {
      return Status::InvalidArgument("stream " + StreamNameLocked(stream) + ": a record of " +
                                     std::to_string(payload.size()) +
                                     " bytes does not fit its reservation");
    }
    r->Take(charge);
    assert(reserved_ >= charge && "a reservation's bytes are counted in reserved_");
    reserved_ -= charge;
  } else {
    Status s = MakeRoomLocked(new_end + block_ + reserved_, use_reserve ? 0 : reserve_);
    if (!s.ok()) return s.Annotate("stream " + StreamNameLocked(stream));
  }

  format::RecordHeader rh;
  rh.stream = stream;
  rh.type = type;
  rh.length = uint32_t(payload.size());
  rh.prev = prev;
  rh.undo_next = undo_next;
  rh.stream_prev = st ? st->last : kInvalidLsn;
  std::byte header[kRecordHeaderSize];
  rh.EncodeTo(header);
  rh.checksum = format::RecordChecksum(header, payload_hash);
  rh.EncodeTo(header);

  buf_.resize(new_end - buf_start_);
  if (const uint64_t room = block_ - end_ % block_; room < kMinRecordStart) {
    std::memset(buf_.data() + (end_ - buf_start_), 0, room);  // too little room: zeros (FORMAT.md)
  }
  Lsn lsn = kInvalidLsn;
  Layout(block_, end_, total, [&](Lsn at, uint8_t ftype, uint64_t off, uint64_t n) {
    // The block rules of FORMAT.md: a fragment lies within one block, and a record starts only
    // where both its headers fit.
    assert(at % block_ + kFragmentHeaderSize + n <= block_ && "a fragment crosses a block");
    assert((lsn != kInvalidLsn || block_ - at % block_ >= kMinRecordStart) &&
           "a record starts where its headers do not fit");
    if (lsn == kInvalidLsn) lsn = at;
    std::byte* p = buf_.data() + (at - buf_start_);
    FragmentHeader fh;
    fh.address = at;
    fh.epoch = epoch_;
    fh.length = uint16_t(n);
    fh.type = ftype;
    fh.stream = stream;
    fh.EncodeTo(p);  // flush_back and checksum are stamped by the flush
    p += kFragmentHeaderSize;
    // Copy [off, off + n) of header | prefix | body.
    auto copy = [&](std::span<const std::byte> part, uint64_t part_off) {
      if (part.empty() || off + n <= part_off || off >= part_off + part.size()) return;
      uint64_t from = std::max(off, part_off);
      uint64_t to = std::min(off + n, part_off + part.size());
      CopyJob job{p + (from - off), part.data() + (from - part_off), size_t(to - from)};
      if (deferred && part.data() != header) {
        deferred->push_back(job);
      } else {
        std::memcpy(job.dst, job.src, job.n);
      }
    };
    copy({header, kRecordHeaderSize}, 0);
    copy(payload.prefix, kRecordHeaderSize);
    copy(payload.body, kRecordHeaderSize + payload.prefix.size());
  });
  // Records follow each other: each one starts at or after the end before it, and a stream's
  // chain runs backwards in LSN order.
  assert(lsn != kInvalidLsn && lsn >= end_ && lsn < new_end);
  assert(st == nullptr || st->last == kInvalidLsn || st->last < lsn);
  end_ = new_end;
  if (st) st->last = lsn;
  stats_.appends++;
  return lsn;
}

Result<std::unique_ptr<Reservation>> LogImpl::Reserve(uint64_t payload_bytes) {
  if (payload_bytes > UINT32_MAX) return Status::InvalidArgument("reservation too large");
  const uint64_t bytes = WorstCaseBytes(payload_bytes);
  std::lock_guard lock(mu_);
  if (!failed_.ok()) return failed_;
  // Reservations are taken for new work: they leave the reserve alone.
  KTMFS_RETURN_IF_ERROR(MakeRoomLocked(end_ + block_ + reserved_ + bytes, reserve_));
  reserved_ += bytes;
  return std::unique_ptr<Reservation>(new ReservationImpl(anchor_, bytes));
}

void LogImpl::Unreserve(uint64_t bytes) {
  std::lock_guard lock(mu_);
  assert(reserved_ >= bytes);
  reserved_ -= bytes;
}

// Makes the ring reach needed_end + keep: by persisting a later start (space every stream
// released), or by adding a container; "log full" when neither is possible.
Status LogImpl::MakeRoomLocked(Lsn needed_end, uint64_t keep) {
  needed_end += keep;
  while (true) {
    const uint64_t n = image_.ring.size();
    const Lsn limit = (image_.start_lsn / container_ + n) * container_;
    if (needed_end <= limit) return Status::Ok();
    Lsn candidate = flushed_;
    for (const auto& [id, st] : streams_)
      candidate = std::min(candidate, st.base);
    if (candidate / container_ > image_.start_lsn / container_) {
      KTMFS_RETURN_IF_ERROR(StoreBaseLocked());
      continue;
    }
    if (n < image_.max_containers) {
      KTMFS_RETURN_IF_ERROR(GrowLocked());
      continue;
    }
    std::string pin = "unflushed records";
    Lsn pin_lsn = flushed_;
    for (const auto& [id, st] : streams_) {
      if (st.base <= pin_lsn) pin_lsn = st.base, pin = "stream " + StreamNameLocked(id);
    }
    std::string kept;
    if (keep != 0) {
      kept = " (" + std::to_string(keep >> 10) +
             " KiB of them kept for commits, rollbacks and recovery)";
    }
    return Status::LogFull("log full: " + std::to_string(n) + " of " +
                           std::to_string(image_.max_containers) + " containers in use" + kept +
                           " and " + pin + " holds LSN " + LsnToString(pin_lsn));
  }
}

// Inserts a new container after the newest one in logical order, so the containers already in
// use keep their place relative to the anchor.
Status LogImpl::GrowLocked() {
  const uint64_t n = image_.ring.size();
  const uint64_t new_logical = image_.start_lsn / container_ + n;
  const uint32_t id = image_.next_container_id;
  auto file = storage_->Open(ContainerFileName(id), OpenMode::kCreate);
  if (!file.ok()) return file.status();
  KTMFS_RETURN_IF_ERROR((*file)->Allocate(container_));
  KTMFS_RETURN_IF_ERROR(storage_->SyncDir());
  // Index of the newest container in use, then the new one right after it.
  const int64_t d = int64_t(new_logical - 1 - image_.anchor_logical) % int64_t(n);
  const uint64_t newest = uint64_t((int64_t(image_.anchor_index) + d + int64_t(n)) % int64_t(n));
  image_.ring.insert(image_.ring.begin() + int64_t(newest + 1), id);
  image_.anchor_logical = new_logical;
  image_.anchor_index = uint32_t(newest + 1);
  image_.next_container_id = id + 1;
  files_[id] = std::move(*file);
  return StoreBaseLocked();
}

// Ends the buffer at a block boundary: a flush never leaves a block for a later write to
// rewrite, so a torn write can only harm unflushed data.
void LogImpl::PadTail(AlignedBytes& data, Lsn start, Lsn data_end) const {
  if (data_end % block_ == 0) return;
  const uint64_t room = block_ - data_end % block_;
  data.resize(BlockCeil(data_end) - start);
  std::memset(data.data() + (data_end - start), 0, room);
  if (room >= kMinRecordStart) {
    FragmentHeader fh;
    fh.address = data_end;
    fh.epoch = epoch_;
    fh.length = uint16_t(room - kFragmentHeaderSize);
    fh.type = format::kPad;
    fh.EncodeTo(data.data() + (data_end - start));
  }
}

// Group commit: a caller whose record is not yet in any flush issues a new flush of everything
// appended so far (it leads it, in its own thread), unless max_inflight_ flushes are already in
// the kernel; then it waits, and its record goes out with a later flush.
//
// Gathering: when a flush completes, the committers it released come back with their next
// records at once. Issuing the next flush before they are back would split every round of N
// committers into two groups of about N/2 (those who were waiting, and those who were in the
// flush), so the next flush waits until as many callers have joined as were active in the last
// round (the group released, its leader, and those already waiting), or until as long as the last
// sync took has passed: whichever comes first. The caller that completes the group leads its flush
// itself; the first sleeper keeps the deadline. A lone committer's group is itself, so it never
// waits. (The bound: on the 2-core development VM, sixteen committers need about half to one sync's
// time to come back; with a quarter the groups stayed at about 8 and commits/s barely moved.)
//
// Sleeping: the committers of one flush sleep on its slot's word; once their records are durable
// one system call releases them all, and they leave without taking the log's mutex, so the group
// comes back for the next round together. Nobody else is woken: the gathering group only when it
// has neither a leader nor a deadline keeper (on few cores, waking every committer at every flush
// costs more than the sync).
Status LogImpl::Flush(Lsn lsn) {
  std::vector<WakeWord*> wake;
  Status s;
  {
    std::unique_lock lock(mu_);
    s = FlushLocked(lock, lsn, &wake);
  }
  // Woken after the lock is released, so the sleepers do not wake only to block on it. Slots live
  // as long as the log, and a sleeper that already left takes no harm.
  for (WakeWord* w : wake)
    w->WakeAll();
  return s;
}

Status LogImpl::FlushLocked(std::unique_lock<std::mutex>& lock, Lsn lsn,
                            std::vector<WakeWord*>* wake) {
  stats_.flushes_requested++;
  // The record starting at lsn must be complete, so flush past its first byte.
  const Lsn target = lsn >= end_ ? end_ : lsn + 1;
  if (target > buf_start_) joined_++;
  while (true) {
    if (flushed_ >= target) return Status::Ok();
    if (!failed_.ok()) return failed_;
    const bool can_issue = target > buf_start_ && inflight_.size() < max_inflight_;
    if (can_issue && GroupReadyLocked()) {
      LeadLocked(lock, wake);  // then wait for earlier flushes, if any, or see its failure
      continue;
    }
    FlushSlot& slot = SlotForLocked(target);
    const uint32_t seen = slot.word.value();
    slot.sleepers++;
    uint64_t timer = 0;
    if (can_issue && timer_ == 0) timer = timer_ = ++timer_ids_;
    const auto deadline = gather_until_;
    lock.unlock();
    if (timer != 0) {
      slot.word.WaitUntil(seen, deadline);
    } else {
      slot.word.Wait(seen);
    }
    slot.sleepers.fetch_sub(1, std::memory_order_relaxed);
    // The common wake: the record is durable. Leaving without the mutex spares a released group
    // from queueing on it.
    if (timer == 0 && durable_.load(std::memory_order_acquire) >= target) return Status::Ok();
    lock.lock();
    if (timer != 0 && timer_ == timer) timer_ = 0;
  }
}

// The slot of the flush that makes `target` durable: one in flight, or the gathering one.
FlushSlot& LogImpl::SlotForLocked(Lsn target) {
  uint64_t seq = next_seq_;
  if (target <= buf_start_) {
    for (const auto& f : inflight_) {
      if (target <= f->end) {
        seq = f->seq;
        break;
      }
    }
  }
  return slots_[seq % kFlushSlots];
}

size_t LogImpl::ReleaseSlotLocked(FlushSlot& slot, std::vector<WakeWord*>* wake) {
  slot.word.Bump();
  const uint32_t sleepers = slot.sleepers.load(std::memory_order_relaxed);
  if (sleepers == 0) return 0;
  if (std::find(wake->begin(), wake->end(), &slot.word) == wake->end()) wake->push_back(&slot.word);
  return sleepers;
}

bool LogImpl::GroupReadyLocked() const {
  return gather_size_ == 0 || joined_ >= gather_size_ ||
         std::chrono::steady_clock::now() >= gather_until_;
}

// Seals the buffer, writes and syncs it, and then wakes those whose records are durable and sets
// up the gathering of the next group (see Flush).
void LogImpl::LeadLocked(std::unique_lock<std::mutex>& lock, std::vector<WakeWord*>* wake) {
  // Seal: the next append starts at the next block; this flush pads to it.
  const Lsn data_end = end_;
  end_ = BlockCeil(end_);
  inflight_.push_back(std::make_unique<InFlight>());
  InFlight* f = inflight_.back().get();
  f->seq = next_seq_++;
  f->start = buf_start_;
  f->end = end_;
  AlignedBytes data;
  data.swap(buf_);
  std::vector<std::pair<Lsn, Lsn>> presealed;
  presealed.swap(presealed_);
  buf_start_ = end_;
  joined_ = 0;
  gather_size_ = 0;
  timer_ = 0;  // its record is in this flush now
  // Appends into the sealed buffer may still be copying their payloads (the memory moved with
  // the swap, so their pointers hold); wait for them before the buffer may grow for the pad.
  const uint64_t gen = gen_++;
  copy_cv_.wait(lock, [&] { return copies_.count(gen) == 0; });
  PadTail(data, f->start, data_end);
  const Lsn durable = flushed_;
  lock.unlock();
  const auto t0 = std::chrono::steady_clock::now();
  Status s = WriteOut(f, data, durable, presealed);
  const auto t1 = std::chrono::steady_clock::now();
  lock.lock();
  last_sync_ = t1 - t0;
  stats_.flush_nanos +=
      uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(last_sync_).count());
  f->done = true;
  f->status = s;
  size_t released = 0;
  while (!inflight_.empty() && inflight_.front()->done) {
    const InFlight& e = *inflight_.front();
    if (failed_.ok() && e.status.ok()) {
      assert(e.end >= flushed_ && "the durable end never moves back");
      flushed_ = e.end;
      durable_.store(flushed_, std::memory_order_release);
    } else if (failed_.ok()) {
      failed_ = e.status;  // nothing after a failed flush counts as durable
    }
    released += ReleaseSlotLocked(slots_[e.seq % kFlushSlots], wake);
    inflight_.pop_front();
  }
  if (buf_.empty() && buf_.capacity() < data.capacity() && data.capacity() <= kKeptBufferBytes) {
    data.clear();
    buf_.swap(data);  // keep the larger allocation for the next round
  }
  flushed_cv_.notify_all();  // a later piece of a large flush may wait for this one
  if (!failed_.ok()) {
    for (FlushSlot& slot : slots_)
      ReleaseSlotLocked(slot, wake);
  } else {
    gather_size_ = released + 1 + joined_;
    gather_until_ = t1 + last_sync_;
    // Someone waiting for records in no flush must keep the deadline or lead.
    if (timer_ == 0 && inflight_.size() < max_inflight_) {
      ReleaseSlotLocked(slots_[next_seq_ % kFlushSlots], wake);
    }
  }
}

// After a failure outside a flush, every sleeper must see it. Woken under the lock: this is the
// rare path.
void LogImpl::WakeAllWaitersLocked() {
  for (FlushSlot& slot : slots_) {
    slot.word.Bump();
    slot.word.WakeAll();
  }
}

// Stamps every fragment not sealed by its appender (`presealed`: LSN ranges in order) with its
// distance to `durable` (all before it was durable when this write was issued: recovery's
// evidence that a bad spot before it is damage, not a torn tail) and its checksum, then writes
// and syncs in pieces of at most kMaxFlushBytes.
Status LogImpl::WriteOut(InFlight* f, AlignedBytes& data, Lsn durable,
                         const std::vector<std::pair<Lsn, Lsn>>& presealed) {
  auto sealed = presealed.begin();
  const Lsn start = f->start;
  for (uint64_t cs = 0; cs < data.size(); cs += format::kMaxFlushBytes) {
    const uint64_t ce = std::min<uint64_t>(data.size(), cs + format::kMaxFlushBytes);
    if (cs > 0) {
      // A later piece may claim its own earlier pieces as durable once every earlier flush is
      // done too (and so flush_back stays small).
      std::unique_lock lock(mu_);
      flushed_cv_.wait(lock, [&] { return inflight_.front().get() == f || !failed_.ok(); });
      if (!failed_.ok()) return failed_;
      durable = start + cs;
    }
    for (Lsn p = start + cs; p < start + ce;) {
      while (sealed != presealed.end() && sealed->second <= p)
        ++sealed;
      if (sealed != presealed.end() && sealed->first <= p) {
        p = sealed->second;  // sealed by its appender (a later piece may start inside it)
        continue;
      }
      const uint64_t room = block_ - p % block_;
      if (p % block_ != 0 && room < kMinRecordStart) {
        p += room;
        continue;
      }
      std::byte* frag = data.data() + (p - start);
      if (static_cast<uint8_t>(frag[26]) == format::kZero) {
        p = BlockFloor(p) + block_;
        continue;
      }
      format::Put32(frag + 16, uint32_t(p - durable));
      format::SealFragment(frag);
      p += kFragmentHeaderSize + format::Get16(frag + 24);
    }
    for (Lsn a = start + cs; a < start + ce;) {
      const uint64_t logical = a / container_;
      const Lsn cend = std::min<Lsn>(start + ce, (logical + 1) * container_);
      File* file;
      {
        std::lock_guard lock(mu_);
        file = FileForLocked(logical);
      }
      WriteOp op{a % container_, {data.data() + (a - start), size_t(cend - a)}};
      Status s = file->Write({&op, 1}, true);
      if (!s.ok()) return s.Annotate("flushing LSN " + LsnToString(a) + ".." + LsnToString(cend));
      {
        std::lock_guard lock(mu_);
        stats_.syncs++;
        stats_.bytes_written += cend - a;
      }
      a = cend;
    }
  }
  return Status::Ok();
}

}  // namespace ktmfs::log

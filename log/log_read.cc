// Reading: fragments are checked (checksum, address, type, length) before anything in them is
// believed, records are reassembled and checked again as a whole, and cursors walk the log
// forward or follow a record's back chains.
#include <algorithm>

#include "log/log_impl.h"

namespace ktmfs::log {

using format::FragmentHeader;
using format::kFragmentHeaderSize;
using format::kMinRecordStart;
using format::kRecordHeaderSize;

namespace {

// Restart areas keep the previous restart LSN in front of the client's payload.
void StripRestartPrefix(Record* r) {
  if (r->type == format::kRestartAreaType && r->payload.size() >= kRestartPrefix) {
    r->payload.erase(r->payload.begin(), r->payload.begin() + kRestartPrefix);
  }
}

class ForwardCursor : public Cursor {
 public:
  ForwardCursor(LogImpl* log, Lsn from, Lsn end, bool one_stream, StreamId stream)
      : log_(log),
        from_(from),
        pos_(log->BlockFloor(from)),
        end_(end),
        one_stream_(one_stream),
        stream_(stream),
        reader_(log) {}

  Result<bool> Next(Record* out) override {
    if (!failed_.ok()) return failed_;
    const uint32_t block = log_->block_;
    while (pos_ < end_) {
      if (const LsnRange* d = log_->FindRange(log_->damaged_, pos_)) {
        failed_ = Status::Corruption("log stream " + log_->StreamName(d->stream) + ": LSN " +
                                     LsnToString(d->begin) + ": damaged record (up to " +
                                     LsnToString(d->end) + ")");
        return failed_;
      }
      if (const LsnRange* g = log_->FindRange(log_->gaps_, pos_)) {
        pos_ = g->end;
        continue;
      }
      const uint64_t room = block - pos_ % block;
      if (pos_ % block != 0 && room < kMinRecordStart) {
        pos_ += room;
        continue;
      }
      auto blk = reader_.Block(log_->BlockFloor(pos_));
      if (!blk.ok()) return failed_ = blk.status();
      FragmentHeader h;
      if (!log_->CheckFragment(*blk, pos_, &h)) {
        failed_ = Status::Corruption("log stream " + log_->StreamName(h.stream) + ": LSN " +
                                     LsnToString(pos_) + ": damaged record");
        return failed_;
      }
      if (h.type == format::kPad) {
        pos_ = log_->BlockFloor(pos_) + block;
        continue;
      }
      if (h.type == format::kMiddle || h.type == format::kLast) {
        pos_ += kFragmentHeaderSize + h.length;  // the rest of a record before `from`
        continue;
      }
      auto rec = log_->ParseRecordAt(&reader_, pos_, 0);
      if (!rec.ok()) return failed_ = rec.status();
      pos_ = rec->next;
      Record& r = rec->record;
      if (r.lsn < from_ || r.stream == format::kInternalStream) continue;
      if (one_stream_ && r.stream != stream_) continue;
      StripRestartPrefix(&r);
      *out = std::move(r);
      return true;
    }
    return false;
  }

 private:
  LogImpl* log_;
  Lsn from_;
  Lsn pos_;
  Lsn end_;
  bool one_stream_;
  StreamId stream_;
  BlockReader reader_;
  Status failed_;
};

class BackwardCursor : public Cursor {
 public:
  BackwardCursor(LogImpl* log, StreamId stream, Lsn from, Stream::Chain chain)
      : log_(log), stream_(stream), next_(from), chain_(chain) {}

  Result<bool> Next(Record* out) override {
    if (!failed_.ok()) return failed_;
    // The chain ends at its start or where truncation has taken the records.
    if (next_ == kInvalidLsn || next_ < log_->BlockFloor(log_->start_lsn())) return false;
    auto rec = log_->ReadStreamRecord(stream_, next_);
    if (!rec.ok()) return failed_ = rec.status();
    Lsn link = chain_ == Stream::Chain::kStreamPrevious ? rec->stream_prev_lsn
               : chain_ == Stream::Chain::kPrevious     ? rec->prev_lsn
                                                        : rec->undo_next_lsn;
    if (link != kInvalidLsn && link >= rec->lsn) {
      failed_ = Status::Corruption("log stream " + log_->StreamName(stream_) + ": LSN " +
                                   LsnToString(rec->lsn) + ": back chain points forward to " +
                                   LsnToString(link));
      return failed_;
    }
    next_ = link;
    *out = std::move(*rec);
    return true;
  }

 private:
  LogImpl* log_;
  StreamId stream_;
  Lsn next_;
  Stream::Chain chain_;
  Status failed_;
};

}  // namespace

Result<const std::byte*> BlockReader::Block(Lsn block_start) {
  const uint32_t block = log_->block_;
  if (block_start >= begin_ && block_start + block <= end_)
    return buf_.data() + (block_start - begin_);
  const uint64_t c = log_->container_;
  const Lsn cend = (block_start / c + 1) * c;
  uint64_t n = std::min<uint64_t>(window_, cend - block_start);
  n = std::max<uint64_t>(block, n / block * block);
  buf_.resize(n);
  begin_ = end_ = 0;
  KTMFS_RETURN_IF_ERROR(log_->ReadBytes(block_start, buf_));
  begin_ = block_start;
  end_ = block_start + n;
  return buf_.data();
}

Status LogImpl::ReadBytes(Lsn lsn, std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    const Lsn at = lsn + done;
    const uint64_t logical = at / container_;
    const size_t n = size_t(std::min<uint64_t>(out.size() - done, (logical + 1) * container_ - at));
    File* file;
    {
      std::lock_guard lock(mu_);
      file = FileForLocked(logical);
    }
    auto got = file->Read(at % container_, out.subspan(done, n));
    if (!got.ok()) return got.status().Annotate("reading LSN " + LsnToString(at));
    // Containers are preallocated; anything missing reads as never written.
    std::fill(out.begin() + done + *got, out.begin() + done + n, std::byte{0});
    done += n;
  }
  return Status::Ok();
}

bool LogImpl::CheckFragment(const std::byte* block, Lsn pos, FragmentHeader* h) const {
  const size_t off = pos % block_;
  *h = FragmentHeader::DecodeFrom(block + off);
  if (h->type < format::kFull || h->type > format::kPad) return false;
  if (h->address != pos) return false;
  if (kFragmentHeaderSize + h->length > block_ - off) return false;
  if (h->flush_back > pos) return false;
  return format::FragmentChecksumOk(block + off);
}

Result<ParsedRecord> LogImpl::ParseRecordAt(BlockReader* reader, Lsn lsn, uint32_t min_epoch) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("LSN " + LsnToString(lsn) + ": " + why);
  };
  if (lsn % block_ != 0 && block_ - lsn % block_ < kMinRecordStart) return bad("not a record");
  auto blk = reader->Block(BlockFloor(lsn));
  if (!blk.ok()) return blk.status();
  FragmentHeader h;
  if (!CheckFragment(*blk, lsn, &h) || h.epoch < min_epoch) return bad("no valid record here");
  if (h.type != format::kFull && h.type != format::kFirst) return bad("not the start of a record");
  ParsedRecord out;
  out.epoch = h.epoch;
  out.durable_before = h.durable_before();
  std::vector<std::byte> data((*blk) + lsn % block_ + kFragmentHeaderSize,
                              (*blk) + lsn % block_ + kFragmentHeaderSize + h.length);
  if (data.size() < kRecordHeaderSize) return bad("record header cut short");
  const format::RecordHeader rh = format::RecordHeader::DecodeFrom(data.data());
  data.reserve(kRecordHeaderSize + uint64_t(rh.length));
  Lsn pos = lsn + kFragmentHeaderSize + h.length;
  uint8_t type = h.type;
  while (type != format::kFull && type != format::kLast) {
    if (pos % block_ != 0) return bad("fragment does not fill its block");
    if (data.size() >= kRecordHeaderSize + uint64_t(rh.length)) return bad("record too long");
    auto b = reader->Block(pos);
    if (!b.ok()) return b.status();
    FragmentHeader c;
    if (!CheckFragment(*b, pos, &c) || c.epoch != out.epoch ||
        (c.type != format::kMiddle && c.type != format::kLast)) {
      return bad("continuation at LSN " + LsnToString(pos) + " is missing or damaged");
    }
    data.insert(data.end(), (*b) + kFragmentHeaderSize, (*b) + kFragmentHeaderSize + c.length);
    pos += kFragmentHeaderSize + c.length;
    type = c.type;
  }
  if (data.size() != kRecordHeaderSize + uint64_t(rh.length)) return bad("record length mismatch");
  std::span<const std::byte> payload(data.data() + kRecordHeaderSize, rh.length);
  if (format::RecordChecksum(data.data(), format::PayloadHash(payload)) != rh.checksum ||
      rh.stream != h.stream) {
    return bad("record checksum mismatch");
  }
  out.record.lsn = lsn;
  out.record.stream = rh.stream;
  out.record.type = rh.type;
  out.record.prev_lsn = rh.prev;
  out.record.undo_next_lsn = rh.undo_next;
  out.record.stream_prev_lsn = rh.stream_prev;
  out.record.payload.assign(payload.begin(), payload.end());
  out.next = pos;
  return out;
}

const LsnRange* LogImpl::FindRange(const std::vector<LsnRange>& ranges, Lsn lsn) const {
  for (const LsnRange& r : ranges) {
    if (lsn >= r.begin && lsn < r.end) return &r;
  }
  return nullptr;
}

Result<Record> LogImpl::ReadStreamRecord(StreamId stream, Lsn lsn) {
  bool need_flush;
  {
    std::lock_guard lock(mu_);
    const std::string who = "log stream " + StreamNameLocked(stream) + ": LSN " + LsnToString(lsn);
    if (lsn >= end_ || lsn < BlockFloor(image_.start_lsn)) {
      return Status::NotFound(who + ": no such record in the log");
    }
    if (const LsnRange* d = FindRange(damaged_, lsn)) {
      return Status::Corruption(who + ": damaged (" + LsnToString(d->begin) + ".." +
                                LsnToString(d->end) + ")");
    }
    if (FindRange(gaps_, lsn)) return Status::NotFound(who + ": no such record in the log");
    need_flush = lsn >= flushed_;
  }
  // Reads go to the containers, so a record still in memory is made durable first.
  if (need_flush) KTMFS_RETURN_IF_ERROR(Flush(lsn));
  BlockReader reader(this, 64 << 10);
  auto rec = ParseRecordAt(&reader, lsn, 0);
  if (!rec.ok()) return rec.status().Annotate("log stream " + StreamName(stream));
  if (rec->record.stream != stream) {
    return Status::NotFound("log stream " + StreamName(stream) + ": LSN " + LsnToString(lsn) +
                            " holds a record of stream " + StreamName(rec->record.stream));
  }
  return std::move(rec->record);
}

std::unique_ptr<Cursor> LogImpl::NewForwardCursor(Lsn from, bool one_stream, StreamId stream) {
  Lsn end;
  {
    std::lock_guard lock(mu_);
    from = std::max(from, BlockFloor(image_.start_lsn));
    end = end_;
  }
  if (!Flush(end).ok()) end = flushed_lsn();  // read what is durable
  return std::make_unique<ForwardCursor>(this, from, std::min(end, flushed_lsn()), one_stream,
                                         stream);
}

std::unique_ptr<Cursor> LogImpl::ReadAll(Lsn from) {
  return NewForwardCursor(from, false, 0);
}

// --- Stream

Result<Lsn> StreamImpl::Append(const AppendArgs& args, Reservation* reservation) {
  if (args.type >= format::kFirstReservedType) {
    return Status::InvalidArgument("log stream '" + name_ + "': record type " +
                                   std::to_string(args.type) + " is reserved");
  }
  return log_->AppendRecord(id_, args.type, {{}, args.payload}, args.prev_lsn, args.undo_next_lsn,
                            reservation, args.use_reserve);
}

Result<std::unique_ptr<Reservation>> StreamImpl::Reserve(uint64_t payload_bytes) {
  auto r = log_->Reserve(payload_bytes);
  if (!r.ok()) return r.status().Annotate("log stream '" + name_ + "'");
  return r;
}

Status StreamImpl::Flush(Lsn lsn) {
  return log_->Flush(lsn);
}

Result<Record> StreamImpl::Read(Lsn lsn) {
  auto r = log_->ReadStreamRecord(id_, lsn);
  if (r.ok()) StripRestartPrefix(&*r);
  return r;
}

std::unique_ptr<Cursor> StreamImpl::ReadForward(Lsn from) {
  return log_->NewForwardCursor(from, true, id_);
}

std::unique_ptr<Cursor> StreamImpl::ReadBackward(Lsn from, Chain chain) {
  struct Stripping : Cursor {
    std::unique_ptr<Cursor> inner;
    Result<bool> Next(Record* out) override {
      auto r = inner->Next(out);
      if (r.ok() && *r) StripRestartPrefix(out);
      return r;
    }
  };
  auto c = std::make_unique<Stripping>();
  c->inner = std::make_unique<BackwardCursor>(log_, id_, from, chain);
  return c;
}

Result<Lsn> StreamImpl::WriteRestartArea(std::span<const std::byte> payload, Lsn new_base_lsn) {
  Lsn prev;
  {
    std::lock_guard lock(log_->mu_);
    prev = log_->streams_[id_].restart;
  }
  std::byte prefix[kRestartPrefix];
  format::Put64(prefix, prev);
  // A restart area is what lets a stream's base, and so the log's start, move: it may use the
  // reserve, or a full log could never be truncated.
  auto lsn =
      log_->AppendRecord(id_, format::kRestartAreaType, {prefix, payload}, prev, 0, nullptr, true);
  if (!lsn.ok()) return lsn.status();
  KTMFS_RETURN_IF_ERROR(log_->Flush(*lsn));
  std::lock_guard lock(log_->mu_);
  StreamState& st = log_->streams_[id_];
  if (*lsn > st.restart) {
    st.prev_restart = st.restart;
    st.restart = *lsn;
  }
  if (new_base_lsn != kInvalidLsn && new_base_lsn > st.base) {
    st.base = std::min(new_base_lsn, log_->end_);
  }
  Status s = log_->StoreBaseLocked();
  if (!s.ok()) return s.Annotate("log stream '" + name_ + "': writing restart area");
  return *lsn;
}

Result<Record> StreamImpl::ReadRestartArea() {
  Lsn r;
  {
    std::lock_guard lock(log_->mu_);
    r = log_->streams_[id_].restart;
  }
  if (r == kInvalidLsn) {
    return Status::NotFound("log stream '" + name_ + "' has no restart area");
  }
  return Read(r);
}

Result<Record> StreamImpl::ReadPreviousRestartArea(Lsn restart_lsn) {
  Lsn prev = kInvalidLsn;
  bool known = false;
  {
    std::lock_guard lock(log_->mu_);
    const StreamState& st = log_->streams_[id_];
    // The base file keeps the previous one of the newest, for when the newest is damaged.
    if (restart_lsn == st.restart) prev = st.prev_restart, known = true;
  }
  if (!known) {
    auto rec = log_->ReadStreamRecord(id_, restart_lsn);
    if (!rec.ok()) return rec.status();
    if (rec->type != format::kRestartAreaType || rec->payload.size() < kRestartPrefix) {
      return Status::InvalidArgument("log stream '" + name_ + "': LSN " + LsnToString(restart_lsn) +
                                     " is not a restart area");
    }
    prev = format::Get64(rec->payload.data());
  }
  if (prev == kInvalidLsn) {
    return Status::NotFound("log stream '" + name_ + "': no restart area before LSN " +
                            LsnToString(restart_lsn));
  }
  return Read(prev);
}

Status StreamImpl::SetBaseLsn(Lsn lsn) {
  std::lock_guard lock(log_->mu_);
  if (log_->read_only_) return log_->failed_;
  StreamState& st = log_->streams_[id_];
  if (lsn < st.base || lsn > log_->end_) {
    return Status::InvalidArgument("log stream '" + name_ + "': base LSN " + LsnToString(lsn) +
                                   " is before the current base or past the end");
  }
  st.base = lsn;
  return Status::Ok();
}

Lsn StreamImpl::base_lsn() const {
  std::lock_guard lock(log_->mu_);
  return log_->streams_.at(id_).base;
}

Lsn StreamImpl::last_lsn() const {
  std::lock_guard lock(log_->mu_);
  return log_->streams_.at(id_).last;
}

}  // namespace ktmfs::log

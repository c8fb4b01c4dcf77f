// Opening a log: creating it, loading the base file, the recovery scan that finds the tail, and
// keeping the base file up to date.
#include <algorithm>

#include "log/log_impl.h"

namespace ktmfs::log {

using format::FragmentHeader;
using format::kFragmentHeaderSize;
using format::kMinRecordStart;

Result<std::unique_ptr<Log>> Log::Open(Storage* storage, const LogOptions& options,
                                       bool create_if_missing) {
  auto log = std::make_unique<LogImpl>(storage);
  log->max_inflight_ =
      std::clamp<size_t>(options.max_inflight_flushes, 1, format::kMaxInflightFlushes);
  log->read_only_ = options.read_only;
  if (options.reserve_percent > 50) {
    return Status::InvalidArgument("the log's reserve must be at most 50% of its size, not " +
                                   std::to_string(options.reserve_percent) + "%");
  }
  auto base = BaseFile::Open(storage, &log->image_);
  if (base.ok()) {
    log->base_file_ = std::move(*base);
  } else if (base.status().IsNotFound() && create_if_missing && !options.read_only) {
    KTMFS_RETURN_IF_ERROR(log->Create(options));
  } else {
    return base.status().Annotate("opening the log in " + storage->Describe());
  }
  Status s = log->Load();
  if (!s.ok()) return s.Annotate("opening the log in " + storage->Describe());
  // Of the size the base file says (an existing log keeps the size it was created with), rounded
  // to blocks.
  const uint64_t capacity = uint64_t(log->image_.max_containers) * log->image_.container_size;
  log->reserve_ = log->BlockCeil(
      std::min<uint64_t>(capacity / 100 * options.reserve_percent, log->image_.container_size));
  return std::unique_ptr<Log>(std::move(log));
}

LogImpl::~LogImpl() {
  std::lock_guard lock(anchor_->mu);
  anchor_->log = nullptr;
}

Status LogImpl::Create(const LogOptions& options) {
  const uint32_t b = options.block_size;
  if (b < 512 || b > 32768 || (b & (b - 1)) != 0) {
    return Status::InvalidArgument("block size must be a power of two from 512 to 32768");
  }
  if (options.container_size % b != 0 || options.container_size < 4ull * b ||
      options.container_size > (1ull << 40)) {
    return Status::InvalidArgument(
        "container size must be a multiple of the block size, >= 4 blocks");
  }
  if (options.initial_containers < 2 || options.max_containers < options.initial_containers ||
      options.max_containers > 65536) {
    return Status::InvalidArgument("need 2 <= initial_containers <= max_containers <= 65536");
  }
  BaseImage img;
  img.block_size = b;
  img.container_size = options.container_size;
  img.max_containers = options.max_containers;
  img.epoch = 0;
  img.epoch_floor = 1;
  img.start_lsn = options.container_size;  // logical container 1, offset 0: LSN 0 stays invalid
  img.anchor_logical = 1;
  img.anchor_index = 0;
  for (uint32_t i = 0; i < options.initial_containers; ++i) {
    auto file = storage_->Open(ContainerFileName(i), OpenMode::kCreate);
    if (!file.ok()) return file.status();
    KTMFS_RETURN_IF_ERROR((*file)->Allocate(options.container_size));
    img.ring.push_back(i);
  }
  img.next_container_id = options.initial_containers;
  KTMFS_RETURN_IF_ERROR(storage_->SyncDir());
  auto base = BaseFile::Create(storage_, &img);
  if (!base.ok()) return base.status();
  base_file_ = std::move(*base);
  image_ = std::move(img);
  return Status::Ok();
}

Status LogImpl::Load() {
  block_ = image_.block_size;
  container_ = image_.container_size;
  if (block_ % storage_->alignment() != 0) {
    return Status::InvalidArgument("block size " + std::to_string(block_) +
                                   " is not a multiple of the storage's alignment");
  }
  KTMFS_RETURN_IF_ERROR(OpenContainers());
  for (const auto& e : image_.streams) {
    if (e.id == format::kInternalStream || streams_.count(e.id)) {
      return Status::Corruption("base file: bad or duplicate stream id " + std::to_string(e.id));
    }
    StreamState& st = streams_[e.id];
    st.id = e.id;
    st.name = e.name;
    st.base = e.base_lsn;
    st.restart = e.restart_lsn;
    st.prev_restart = e.prev_restart_lsn;
    st.handle = std::make_unique<StreamImpl>(this, e.id, e.name);
  }
  // A new epoch, durable before any record carries it, tells this session's records from
  // leftovers of earlier ones.
  epoch_ = image_.epoch + 1;
  {
    std::lock_guard lock(mu_);
    flushed_ = end_ = buf_start_ = image_.start_lsn;
    durable_ = flushed_;
    tail_at_open_ = 0;  // everything is "before the tail" until the scan is done
    if (!read_only_) KTMFS_RETURN_IF_ERROR(StoreBaseLocked());
  }
  KTMFS_RETURN_IF_ERROR(Recover());
  if (read_only_) {
    std::lock_guard lock(mu_);
    // Every write path stops at failed_ first.
    failed_ = Status::Error(EROFS, "the log in " + storage_->Describe() + " is open read-only");
  }
  return Status::Ok();
}

Status LogImpl::OpenContainers() {
  for (uint32_t id : image_.ring) {
    if (files_.count(id))
      return Status::Corruption("base file lists container " + std::to_string(id) + " twice");
    auto file = storage_->Open(ContainerFileName(id), OpenMode::kExisting);
    if (!file.ok()) return file.status();
    files_[id] = std::move(*file);
  }
  return Status::Ok();
}

File* LogImpl::FileForLocked(uint64_t logical) {
  const int64_t n = int64_t(image_.ring.size());
  int64_t d = int64_t(logical - image_.anchor_logical) % n;
  int64_t idx = (int64_t(image_.anchor_index) + d % n + n) % n;
  return files_[image_.ring[size_t(idx)]].get();
}

Lsn LogImpl::start_lsn() const {
  std::lock_guard lock(mu_);
  return image_.start_lsn;
}

void LogImpl::UpdateStartLocked() {
  Lsn s = flushed_;
  for (const auto& [id, st] : streams_)
    s = std::min(s, st.base);
  if (s <= image_.start_lsn) return;
  image_.start_lsn = s;
  // Past this session's starting point only its own (or later) records can be valid.
  if (tail_at_open_ != 0 && BlockFloor(s) >= tail_at_open_) image_.epoch_floor = epoch_;
}

Status LogImpl::StoreBaseLocked() {
  if (!failed_.ok()) return failed_;
  UpdateStartLocked();
  image_.epoch = epoch_;
  image_.streams.clear();
  for (const auto& [id, st] : streams_) {
    image_.streams.push_back({id, st.name, st.base, st.restart, st.prev_restart});
  }
  Status s = base_file_->Store(&image_);
  // A failed base write may have torn one copy; writing again could tear the other.
  if (!s.ok()) {
    failed_ = s;
    WakeAllWaitersLocked();  // their flushes can no longer happen
  }
  return s;
}

// Scans from the oldest needed block to the tail. Valid records are accepted while their epoch
// does not go down. At the first position with nothing valid, it decides between
//  - the end of a block cut by an earlier session (a cut marker right after says so): skip it;
//  - damage: some valid fragment ahead was written when everything up to past this position
//    was durable, so this position had been synced; remember the range and continue after it;
//  - otherwise the torn tail: the log ends here.
Status LogImpl::Recover() {
  BlockReader reader(this);
  const Lsn start = image_.start_lsn;
  const uint64_t ring_bytes = image_.ring.size() * container_;
  const Lsn limit = (start / container_ + image_.ring.size()) * container_;
  const uint64_t window =
      std::min<uint64_t>(format::kMaxInflightFlushes * format::kMaxFlushBytes, ring_bytes) + block_;
  Lsn pos = BlockFloor(start);
  Lsn tail = pos;
  uint32_t last_epoch = image_.epoch_floor;
  bool skip_continuations = true;  // a record cut by truncation or damage ends here
  std::map<StreamId, Lsn> last;

  while (pos < limit) {
    const uint64_t room = block_ - pos % block_;
    if (pos % block_ != 0 && room < kMinRecordStart) {
      if (tail == pos) tail += room;
      pos += room;
      continue;
    }
    FragmentHeader h;
    const std::byte* blk = nullptr;
    {
      auto b = reader.Block(BlockFloor(pos));
      if (!b.ok()) return b.status();
      blk = *b;
    }
    bool valid = CheckFragment(blk, pos, &h) && h.epoch >= last_epoch;
    if (valid) {
      if (h.type == format::kPad) {
        pos = BlockFloor(pos) + block_;
        tail = pos;
        skip_continuations = false;
        continue;
      }
      if (h.type == format::kMiddle || h.type == format::kLast) {
        if (skip_continuations) {
          pos += kFragmentHeaderSize + h.length;
          tail = pos;
          continue;
        }
      } else {
        auto rec = ParseRecordAt(&reader, pos, last_epoch);
        if (rec.ok()) {
          skip_continuations = false;
          last_epoch = rec->epoch;
          last[rec->record.stream] = rec->record.lsn;
          pos = rec->next;
          tail = pos;
          continue;
        }
        if (!rec.status().IsCorruption()) return rec.status();
      }
    }
    const Lsn p = pos;
    if (p % block_ != 0) {
      const Lsn b = BlockFloor(p) + block_;
      auto cut = ParseRecordAt(&reader, b, last_epoch);
      if (cut.ok() && cut->record.stream == format::kInternalStream &&
          cut->record.type == format::kCutMarkerType && cut->record.payload.size() == 8 &&
          format::Get64(cut->record.payload.data()) == p) {
        gaps_.push_back({p, b, 0});
        pos = b;
        continue;
      }
    }
    Lsn resync = 0;
    bool later_flush = false;
    for (Lsn q = BlockFloor(p) + block_; q <= p + window && q < limit; q += block_) {
      auto b = reader.Block(q);
      if (!b.ok()) return b.status();
      FragmentHeader g;
      if (!CheckFragment(*b, q, &g) || g.epoch < last_epoch) continue;
      if (resync == 0) resync = q;
      if (g.durable_before() > p) {
        later_flush = true;
        break;
      }
    }
    if (!later_flush) break;
    damaged_.push_back({p, resync, h.stream});
    pos = resync;
    skip_continuations = true;
  }

  std::lock_guard lock(mu_);
  for (auto& [id, st] : streams_) {
    auto it = last.find(id);
    st.last = it == last.end() ? kInvalidLsn : it->second;
  }
  const Lsn end = std::max(BlockCeil(tail), BlockCeil(start));
  flushed_ = end_ = buf_start_ = tail_at_open_ = end;
  durable_ = flushed_;
  for (auto& [id, st] : streams_)
    st.base = std::min(st.base, end);
  stats_.cut_gaps_skipped = gaps_.size();
  stats_.damaged_ranges = damaged_.size();
  if (tail % block_ != 0) {
    stats_.torn_tail_cut_in_block = 1;
    // The torn tail ended inside a block this session will not write again. The first append
    // puts a cut marker at `end` saying so, so the next scan skips the rest of that block
    // instead of calling it damage.
    gaps_.push_back({tail, end, 0});
    pending_cut_ = tail;
  }
  return Status::Ok();
}

Result<Stream*> LogImpl::OpenStream(const std::string& name, bool create) {
  std::lock_guard lock(mu_);
  for (auto& [id, st] : streams_) {
    if (st.name == name) return static_cast<Stream*>(st.handle.get());
  }
  if (!create) return Status::NotFound("log stream '" + name + "' does not exist");
  if (!failed_.ok()) return failed_;
  if (closed_) return Status::InvalidArgument("log is closed");
  if (name.empty() || name.size() > 255) {
    return Status::InvalidArgument("log stream name must have 1 to 255 bytes");
  }
  StreamId id = 1;
  if (!streams_.empty()) id = streams_.rbegin()->first + 1;
  if (id == 0 || streams_.size() >= 1000) {
    return Status::InvalidArgument("too many log streams to add '" + name + "'");
  }
  StreamState& st = streams_[id];
  st.id = id;
  st.name = name;
  st.base = end_;
  st.handle = std::make_unique<StreamImpl>(this, id, name);
  Status s = StoreBaseLocked();
  if (!s.ok()) {
    streams_.erase(id);
    return s.Annotate("creating log stream '" + name + "'");
  }
  return static_cast<Stream*>(st.handle.get());
}

std::vector<StreamInfo> LogImpl::Streams() const {
  std::lock_guard lock(mu_);
  std::vector<StreamInfo> out;
  for (const auto& [id, st] : streams_) {
    out.push_back({id, st.name, st.base, st.restart, st.last});
  }
  return out;
}

Lsn LogImpl::flushed_lsn() const {
  std::lock_guard lock(mu_);
  return flushed_;
}

Lsn LogImpl::end_lsn() const {
  std::lock_guard lock(mu_);
  return end_;
}

LogStats LogImpl::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

LogGeometry LogImpl::geometry() const {
  std::lock_guard lock(mu_);
  return {format::kFormatVersion, image_.block_size,
          image_.container_size,  static_cast<uint32_t>(image_.ring.size()),
          image_.max_containers,  image_.start_lsn};
}

std::vector<DamagedRange> LogImpl::damaged_ranges() const {
  std::lock_guard lock(mu_);
  std::vector<DamagedRange> out;
  for (const LsnRange& d : damaged_)
    out.push_back({d.stream, d.begin, d.end});
  return out;
}

Status LogImpl::Close() {
  if (read_only_) {
    std::lock_guard lock(mu_);
    closed_ = true;
    return Status::Ok();
  }
  KTMFS_RETURN_IF_ERROR(Flush(kMaxLsn));
  std::lock_guard lock(mu_);
  if (closed_) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(StoreBaseLocked());
  closed_ = true;
  return Status::Ok();
}

std::string LogImpl::StreamNameLocked(StreamId id) const {
  auto it = streams_.find(id);
  if (it != streams_.end()) return "'" + it->second.name + "'";
  return "#" + std::to_string(id);
}

std::string LogImpl::StreamName(StreamId id) const {
  std::lock_guard lock(mu_);
  return StreamNameLocked(id);
}

}  // namespace ktmfs::log

#include "log/fault_storage.h"

#include <algorithm>
#include <cstring>

namespace ktmfs::log {

struct FaultInjectingStorage::Node {
  struct PendingWrite {
    uint64_t seq;
    uint64_t offset;
    std::vector<std::byte> data;
  };
  std::vector<std::byte> durable;
  std::vector<std::byte> current;
  std::vector<PendingWrite> unsynced;
};

namespace {

void ApplyAt(std::vector<std::byte>* image, uint64_t offset, std::span<const std::byte> data) {
  if (image->size() < offset + data.size()) image->resize(offset + data.size());
  std::memcpy(image->data() + offset, data.data(), data.size());
}

}  // namespace

class FaultFile : public File {
 public:
  FaultFile(FaultInjectingStorage* storage, std::shared_ptr<FaultInjectingStorage::Node> node,
            std::string name, uint64_t generation)
      : storage_(storage), node_(std::move(node)), name_(std::move(name)), gen_(generation) {}

  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) override {
    std::lock_guard lock(storage_->mu_);
    KTMFS_RETURN_IF_ERROR(AliveLocked());
    const auto& cur = node_->current;
    if (offset >= cur.size()) return size_t{0};
    size_t n = std::min<uint64_t>(out.size(), cur.size() - offset);
    std::memcpy(out.data(), cur.data() + offset, n);
    return n;
  }

  Status Write(std::span<const WriteOp> ops, bool sync) override {
    std::lock_guard lock(storage_->mu_);
    KTMFS_RETURN_IF_ERROR(AliveLocked());
    for (const WriteOp& op : ops) {
      if (op.offset + op.data.size() > storage_->max_file_size_) {
        return Status::Error(ENOSPC, name_ + ": file size limit");
      }
    }
    KTMFS_RETURN_IF_ERROR(storage_->BeginEventLocked(name_ + ": write"));
    for (const WriteOp& op : ops) {
      ApplyAt(&node_->current, op.offset, op.data);
      node_->unsynced.push_back(
          {++storage_->write_seq_, op.offset, {op.data.begin(), op.data.end()}});
    }
    if (!sync) return Status::Ok();
    return SyncLocked();
  }

  Status Sync() override {
    std::lock_guard lock(storage_->mu_);
    KTMFS_RETURN_IF_ERROR(AliveLocked());
    return SyncLocked();
  }

  Result<uint64_t> Size() override {
    std::lock_guard lock(storage_->mu_);
    KTMFS_RETURN_IF_ERROR(AliveLocked());
    return uint64_t{node_->current.size()};
  }

  Status Allocate(uint64_t size) override {
    std::lock_guard lock(storage_->mu_);
    KTMFS_RETURN_IF_ERROR(AliveLocked());
    if (size > storage_->max_file_size_) return Status::Error(ENOSPC, name_ + ": file size limit");
    KTMFS_RETURN_IF_ERROR(storage_->BeginEventLocked(name_ + ": allocate"));
    if (node_->current.size() < size) node_->current.resize(size);
    if (node_->durable.size() < size) node_->durable.resize(size);
    return Status::Ok();
  }

  const std::string& name() const override { return name_; }

 private:
  Status AliveLocked() const {
    if (storage_->crashed_ || gen_ != storage_->generation_) {
      return Status::IoError(name_ + ": storage has crashed");
    }
    return Status::Ok();
  }
  Status SyncLocked() {
    KTMFS_RETURN_IF_ERROR(storage_->BeginEventLocked(name_ + ": sync"));
    for (const auto& w : node_->unsynced)
      ApplyAt(&node_->durable, w.offset, w.data);
    node_->unsynced.clear();
    storage_->syncs_++;
    return Status::Ok();
  }

  FaultInjectingStorage* storage_;
  std::shared_ptr<FaultInjectingStorage::Node> node_;
  std::string name_;
  uint64_t gen_;
};

FaultInjectingStorage::FaultInjectingStorage(uint64_t seed, size_t sector)
    : rng_(seed), sector_(sector) {}
FaultInjectingStorage::~FaultInjectingStorage() = default;

uint64_t FaultInjectingStorage::events() const {
  std::lock_guard lock(mu_);
  return events_;
}
void FaultInjectingStorage::CrashAtEvent(uint64_t n, CrashMode mode) {
  std::lock_guard lock(mu_);
  crash_at_ = n;
  crash_mode_ = mode;
}
void FaultInjectingStorage::CrashNow(CrashMode mode) {
  std::lock_guard lock(mu_);
  CrashLocked(mode);
}
bool FaultInjectingStorage::crashed() const {
  std::lock_guard lock(mu_);
  return crashed_;
}
void FaultInjectingStorage::FailAtEvent(uint64_t n, int error) {
  std::lock_guard lock(mu_);
  fail_at_ = n;
  fail_error_ = error;
}
void FaultInjectingStorage::set_max_file_size(uint64_t bytes) {
  std::lock_guard lock(mu_);
  max_file_size_ = bytes;
}
uint64_t FaultInjectingStorage::syncs() const {
  std::lock_guard lock(mu_);
  return syncs_;
}

void FaultInjectingStorage::Restart() {
  std::lock_guard lock(mu_);
  if (!crashed_) CrashLocked(CrashMode::kDropUnsynced);
  for (auto& [name, node] : files_) {
    node->current = node->durable;
    node->unsynced.clear();
  }
  crashed_ = false;
  crash_at_ = 0;
  fail_at_ = 0;
}

Status FaultInjectingStorage::BeginEventLocked(const std::string& what) {
  uint64_t n = ++events_;
  if (n == crash_at_) {
    CrashLocked(crash_mode_);
    return Status::IoError(what + ": crashed at event " + std::to_string(n));
  }
  if (n == fail_at_) {
    return Status::Error(fail_error_, what + ": injected failure at event " + std::to_string(n));
  }
  return Status::Ok();
}

void FaultInjectingStorage::CrashLocked(CrashMode mode) {
  if (crashed_) return;
  crashed_ = true;
  generation_++;
  if (mode == CrashMode::kTearLastWrite) {
    Node* last = nullptr;
    const Node::PendingWrite* w = nullptr;
    for (auto& [name, node] : files_) {
      for (const auto& p : node->unsynced) {
        if (!w || p.seq > w->seq) w = &p, last = node.get();
      }
    }
    if (w && !w->data.empty()) {
      // Sector boundaries inside the write, in file offsets.
      uint64_t first = (w->offset / sector_ + 1) * sector_;
      uint64_t end = w->offset + w->data.size();
      std::vector<uint64_t> cuts{w->offset};
      for (uint64_t c = first; c < end; c += sector_)
        cuts.push_back(c);
      uint64_t cut = cuts[rng_() % cuts.size()];
      ApplyAt(&last->durable, w->offset,
              std::span<const std::byte>(w->data).first(cut - w->offset));
      uint64_t torn_end = std::min(end, (cut / sector_ + 1) * sector_);
      std::vector<std::byte> garbage(torn_end - cut);
      for (auto& b : garbage)
        b = std::byte(rng_() & 0xff);
      ApplyAt(&last->durable, cut, garbage);
    }
  } else if (mode == CrashMode::kKeepRandomUnsynced) {
    for (auto& [name, node] : files_) {
      for (const auto& p : node->unsynced) {
        uint64_t end = p.offset + p.data.size();
        for (uint64_t s = p.offset; s < end;) {
          uint64_t next = std::min(end, (s / sector_ + 1) * sector_);
          if (rng_() & 1) {
            ApplyAt(&node->durable, s,
                    std::span<const std::byte>(p.data).subspan(s - p.offset, next - s));
          }
          s = next;
        }
      }
    }
  }
  for (auto& [name, node] : files_)
    node->unsynced.clear();
}

std::vector<std::byte> FaultInjectingStorage::Contents(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = files_.find(name);
  return it == files_.end() ? std::vector<std::byte>{} : it->second->current;
}

void FaultInjectingStorage::SetContents(const std::string& name, std::vector<std::byte> data) {
  std::lock_guard lock(mu_);
  auto& node = files_[name];
  if (!node) node = std::make_shared<Node>();
  node->current = data;
  node->durable = std::move(data);
  node->unsynced.clear();
}

Result<std::unique_ptr<File>> FaultInjectingStorage::Open(const std::string& name, OpenMode mode) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IoError(name + ": storage has crashed");
  auto it = files_.find(name);
  if (it == files_.end()) {
    if (mode != OpenMode::kCreate) return Status::NotFound(name + ": no such file");
    it = files_.emplace(name, std::make_shared<Node>()).first;
  }
  return std::unique_ptr<File>(new FaultFile(this, it->second, name, generation_));
}

Status FaultInjectingStorage::Remove(const std::string& name) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IoError(name + ": storage has crashed");
  if (files_.erase(name) == 0) return Status::NotFound(name + ": no such file");
  return Status::Ok();
}

Status FaultInjectingStorage::Rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IoError(from + ": storage has crashed");
  auto it = files_.find(from);
  if (it == files_.end()) return Status::NotFound(from + ": no such file");
  files_[to] = it->second;
  files_.erase(from);
  return Status::Ok();
}

Result<std::vector<std::string>> FaultInjectingStorage::List() {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IoError("storage has crashed");
  std::vector<std::string> names;
  for (const auto& [name, node] : files_)
    names.push_back(name);
  return names;
}

Status FaultInjectingStorage::SyncDir() {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IoError("storage has crashed");
  return Status::Ok();
}

}  // namespace ktmfs::log

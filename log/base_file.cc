#include "log/base_file.h"

#include <cstdio>

#include "log/format.h"

namespace ktmfs::log {
namespace {

using format::Get16;
using format::Get32;
using format::Get64;

constexpr char kMagic[8] = {'K', 'T', 'M', 'L', 'O', 'G', 'B', '1'};
// magic, version, encoded length, then the fields; the checksum covers everything before it.
constexpr size_t kFixedSize = 8 + 4 + 4 + 8 + 4 + 8 + 4 + 4 + 4 + 8 + 8 + 4 + 4 + 4 + 4;

class Writer {
 public:
  void Bytes(const void* p, size_t n) {
    auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
  }
  template <typename T>
  void Le(T v) {
    std::byte b[sizeof(T)];
    StoreLe(b, v);
    Bytes(b, sizeof b);
  }
  void U16(uint16_t v) { Le(v); }
  void U32(uint32_t v) { Le(v); }
  void U64(uint64_t v) { Le(v); }
  std::vector<std::byte> out;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool Bytes(void* p, size_t n) {
    if (in_.size() - pos_ < n) return false;
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool Le(T* v) {
    std::byte b[sizeof(T)];
    if (!Bytes(b, sizeof b)) return false;
    *v = LoadLe<T>(b);
    return true;
  }
  bool U16(uint16_t* v) { return Le(v); }
  bool U32(uint32_t* v) { return Le(v); }
  bool U64(uint64_t* v) { return Le(v); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

}  // namespace

std::string ContainerFileName(uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof name, "container.%06u", id);
  return name;
}

std::vector<std::byte> BaseImage::Encode() const {
  Writer w;
  w.Bytes(kMagic, 8);
  w.U32(format::kFormatVersion);
  w.U32(0);  // total length, patched below
  w.U64(seq);
  w.U32(block_size);
  w.U64(container_size);
  w.U32(max_containers);
  w.U32(epoch);
  w.U32(epoch_floor);
  w.U64(start_lsn);
  w.U64(anchor_logical);
  w.U32(anchor_index);
  w.U32(next_container_id);
  w.U32(static_cast<uint32_t>(ring.size()));
  w.U32(static_cast<uint32_t>(streams.size()));
  for (uint32_t id : ring)
    w.U32(id);
  for (const auto& s : streams) {
    w.U16(s.id);
    w.U16(static_cast<uint16_t>(s.name.size()));
    w.Bytes(s.name.data(), s.name.size());
    w.U64(s.base_lsn);
    w.U64(s.restart_lsn);
    w.U64(s.prev_restart_lsn);
  }
  uint32_t len = static_cast<uint32_t>(w.out.size() + 8);
  std::memcpy(w.out.data() + 12, &len, 4);
  w.U64(format::Checksum(w.out));
  return std::move(w.out);
}

Result<BaseImage> BaseImage::Decode(std::span<const std::byte> slot) {
  if (slot.size() < kFixedSize + 8 || std::memcmp(slot.data(), kMagic, 8) != 0) {
    return Status::Corruption("no base file header");
  }
  uint32_t len = Get32(slot.data() + 12);
  if (len < kFixedSize + 8 || len > slot.size()) return Status::Corruption("bad base file length");
  if (format::Checksum(slot.first(len - 8)) != Get64(slot.data() + len - 8)) {
    return Status::Corruption("base file checksum mismatch");
  }
  uint32_t version = Get32(slot.data() + 8);
  if (version != format::kFormatVersion) {
    return Status::Corruption("unsupported log format version " + std::to_string(version));
  }
  Reader r(slot.subspan(16, len - 8 - 16));
  BaseImage b;
  uint32_t nring = 0, nstreams = 0;
  r.U64(&b.seq);
  r.U32(&b.block_size);
  r.U64(&b.container_size);
  r.U32(&b.max_containers);
  r.U32(&b.epoch);
  r.U32(&b.epoch_floor);
  r.U64(&b.start_lsn);
  r.U64(&b.anchor_logical);
  r.U32(&b.anchor_index);
  r.U32(&b.next_container_id);
  r.U32(&nring);
  if (!r.U32(&nstreams)) return Status::Corruption("base file truncated");
  if (b.block_size < 512 || b.block_size > 32768 || (b.block_size & (b.block_size - 1)) ||
      b.container_size < 4ull * b.block_size || b.container_size % b.block_size ||
      b.container_size > (1ull << 40) || nring == 0 || nring > b.max_containers || nring > 65536 ||
      b.anchor_index >= nring || b.start_lsn / b.container_size == 0 || b.anchor_logical == 0 ||
      b.anchor_logical > (UINT64_MAX / b.container_size) - 2 ||
      b.start_lsn / b.container_size > (UINT64_MAX / b.container_size) - 65536 - 2) {
    return Status::Corruption("base file parameters out of range");
  }
  for (uint32_t i = 0; i < nring; ++i) {
    uint32_t id;
    if (!r.U32(&id)) return Status::Corruption("base file truncated in the container list");
    b.ring.push_back(id);
  }
  for (uint32_t i = 0; i < nstreams; ++i) {
    BaseStreamEntry s;
    uint16_t nlen = 0;
    if (!r.U16(&s.id) || !r.U16(&nlen)) return Status::Corruption("base file truncated");
    s.name.resize(nlen);
    if (!r.Bytes(s.name.data(), nlen) || !r.U64(&s.base_lsn) || !r.U64(&s.restart_lsn) ||
        !r.U64(&s.prev_restart_lsn)) {
      return Status::Corruption("base file truncated in the stream table");
    }
    b.streams.push_back(std::move(s));
  }
  return b;
}

Result<std::unique_ptr<BaseFile>> BaseFile::Open(Storage* storage, BaseImage* image) {
  auto file = storage->Open(kBaseFileName, OpenMode::kExisting);
  if (!file.ok()) return file.status();
  std::vector<std::byte> buf(2 * kBaseSlotSize);
  auto n = (*file)->Read(0, buf);
  if (!n.ok()) return n.status().Annotate(storage->Describe() + "/" + kBaseFileName);
  buf.resize(*n);
  Result<BaseImage> best = Status::Corruption("no valid copy");
  // Why each copy was refused, for the message when neither is usable: an administrator
  // deciding what to do with a damaged log needs to know what is wrong with each.
  std::string why[2] = {"missing (the file ends before it)", "missing (the file ends before it)"};
  for (int slot = 0; slot < 2; ++slot) {
    if (buf.size() <= slot * kBaseSlotSize) break;
    auto span = std::span<const std::byte>(buf).subspan(slot * kBaseSlotSize);
    auto img = BaseImage::Decode(span.first(std::min<size_t>(span.size(), kBaseSlotSize)));
    why[slot] = img.ok() ? "valid" : img.status().message();
    if (img.ok() && (!best.ok() || img->seq > best->seq)) best = std::move(img);
  }
  if (!best.ok()) {
    return Status::Corruption(
        storage->Describe() + "/" + kBaseFileName +
        ": neither copy of the base file is valid: copy 1 at offset 0: " + why[0] +
        "; copy 2 at offset " + std::to_string(kBaseSlotSize) + ": " + why[1]);
  }
  *image = std::move(*best);
  return std::unique_ptr<BaseFile>(new BaseFile(std::move(*file)));
}

Result<std::unique_ptr<BaseFile>> BaseFile::Create(Storage* storage, BaseImage* image) {
  // Written under a temporary name and renamed, so a crash while creating leaves either no base
  // file (the log is created again) or a complete one.
  const std::string tmp = std::string(kBaseFileName) + ".tmp";
  auto file = storage->Open(tmp, OpenMode::kCreate);
  if (!file.ok()) return file.status();
  std::unique_ptr<BaseFile> base(new BaseFile(std::move(*file)));
  image->seq = 0;
  KTMFS_RETURN_IF_ERROR(base->Store(image));
  KTMFS_RETURN_IF_ERROR(storage->Rename(tmp, kBaseFileName));
  KTMFS_RETURN_IF_ERROR(storage->SyncDir());
  return base;
}

Status BaseFile::Store(BaseImage* image) {
  image->seq++;
  std::vector<std::byte> bytes = image->Encode();
  if (bytes.size() > kBaseSlotSize) {
    return Status::InvalidArgument(file_->name() + ": stream table too large for the base file");
  }
  // Whole slots, so direct I/O alignment holds and no stale tail confuses a reader.
  bytes.resize(kBaseSlotSize);
  WriteOp op{(image->seq % 2) * kBaseSlotSize, bytes};
  return file_->Write({&op, 1}, true).Annotate(file_->name());
}

}  // namespace ktmfs::log

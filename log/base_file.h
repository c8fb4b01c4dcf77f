// The base file: format parameters, the container ring and the stream table. Two slots (A at
// offset 0, B at kBaseSlotSize) are written alternately with a growing sequence number, so a
// torn update of one leaves the other; the freshest slot whose checksum holds wins on open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "log/io.h"
#include "log/log.h"

namespace ktmfs::log {

inline constexpr const char* kBaseFileName = "ktmfs-log.base";
inline constexpr uint64_t kBaseSlotSize = 64 << 10;

struct BaseStreamEntry {
  StreamId id = 0;
  std::string name;
  Lsn base_lsn = kInvalidLsn;
  Lsn restart_lsn = kInvalidLsn;
  Lsn prev_restart_lsn = kInvalidLsn;
};

struct BaseImage {
  uint64_t seq = 0;
  uint32_t block_size = 0;
  uint64_t container_size = 0;
  uint32_t max_containers = 0;
  uint32_t epoch = 0;        // of the latest open; records carry the epoch that wrote them
  uint32_t epoch_floor = 0;  // records at start_lsn and later were written in this epoch or later
  Lsn start_lsn = 0;         // oldest byte still needed; scans start at its block
  uint64_t anchor_logical = 0;  // logical container number held by ring[anchor_index]
  uint32_t anchor_index = 0;
  uint32_t next_container_id = 0;
  std::vector<uint32_t> ring;  // physical container ids in ring order
  std::vector<BaseStreamEntry> streams;

  std::vector<std::byte> Encode() const;
  static Result<BaseImage> Decode(std::span<const std::byte> slot);
};

std::string ContainerFileName(uint32_t id);

// Reads and writes the two slots of the base file.
class BaseFile {
 public:
  // Loads the freshest valid slot; NotFound if the file does not exist.
  static Result<std::unique_ptr<BaseFile>> Open(Storage* storage, BaseImage* image);
  // Creates the file with `image` in slot A.
  static Result<std::unique_ptr<BaseFile>> Create(Storage* storage, BaseImage* image);
  // Writes `image` with the next sequence number into the slot not holding the newest copy.
  Status Store(BaseImage* image);

 private:
  explicit BaseFile(std::unique_ptr<File> file) : file_(std::move(file)) {}
  std::unique_ptr<File> file_;
};

}  // namespace ktmfs::log

// The xattr values a transaction sets that are too big to keep in the daemon's memory until it
// ends: they go to one file in its staging directory, and its ops and overlay keep only where
// (StoredValue). The file is never synced: each value is also in its op's record, and recovery
// takes it from there. It goes with the staging directory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "fs/tx/records.h"
#include "log/status.h"

namespace ktmfs::fstx {

// Values up to this size stay in memory (counted against their owner's memory cap); bigger
// ones are stored in the value file.
inline constexpr size_t kMaxValueInMemory = 256;
inline constexpr const char* kValueFileName = "xattr-values";

class ValueFile {
 public:
  // Appends `value` to <dir>/xattr-values (made on first use through `dir_fd`). Errors name
  // the file (ENOSPC when the staging filesystem is full).
  Result<StoredValue> Store(int dir_fd, const std::string& dir, std::string_view value);
  // Gives back the room of a value no op refers to (its op was refused), if it is the last one
  // stored; otherwise it stays until the staging goes.
  void Drop(int dir_fd, const StoredValue& at);

 private:
  std::mutex mu_;
  uint64_t end_ = 0;  // under mu_: where the next value goes
};

// The size of a setxattr op's value, wherever it is kept.
inline uint64_t ValueSize(const Op& op) {
  return op.stored_value ? op.stored_value->size : op.value.size();
}

// The value stored at `at` in the value file of the staging directory `staging_dir`.
Result<std::string> ReadStoredValue(const std::string& staging_dir, const StoredValue& at);

}  // namespace ktmfs::fstx

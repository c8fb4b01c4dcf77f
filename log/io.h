// The one I/O interface every durable byte of the log goes through. Two implementations: io_uring
// on a real directory (log/uring_storage.*) and an in-memory, fault-injecting one for tests
// (log/fault_storage.*), so crash behaviour is tested deterministically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "log/status.h"

namespace ktmfs::log {

struct WriteOp {
  uint64_t offset;
  std::span<const std::byte> data;
};

class File {
 public:
  virtual ~File() = default;
  // Reads up to out.size() bytes; fewer only at end of file.
  virtual Result<size_t> Read(uint64_t offset, std::span<std::byte> out) = 0;
  // Issues every write, then, if `sync`, makes them durable (fdatasync linked after the writes).
  // Returns only when all of it is done; a failure of any part fails the whole call.
  virtual Status Write(std::span<const WriteOp> ops, bool sync) = 0;
  virtual Status Sync() = 0;
  virtual Result<uint64_t> Size() = 0;
  // Preallocates [0, size) and makes the new size durable.
  virtual Status Allocate(uint64_t size) = 0;
  virtual const std::string& name() const = 0;
};

enum class OpenMode { kExisting, kCreate };

// A directory of files.
class Storage {
 public:
  virtual ~Storage() = default;
  virtual Result<std::unique_ptr<File>> Open(const std::string& name, OpenMode mode) = 0;
  virtual Status Remove(const std::string& name) = 0;
  // Atomic replace, like rename(2).
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Result<std::vector<std::string>> List() = 0;
  // Makes creations, removals and renames durable.
  virtual Status SyncDir() = 0;
  // With direct I/O, buffers, offsets and lengths must be multiples of this; otherwise 1.
  virtual size_t alignment() const = 0;
  // For messages: the directory's path, or a test's label.
  virtual std::string Describe() const = 0;
};

struct UringStorageOptions {
  // O_DIRECT for every file, so a synced write reaches the device without a page-cache copy (and
  // a one-range sync can be a FUA write). A file on a filesystem that refuses O_DIRECT is opened
  // without it; alignment() stays the same either way.
  bool direct_io = false;
  unsigned queue_depth = 64;
  unsigned rings = 4;  // io_uring instances, so this many writes can be in flight at once
};

// Opens (creating if needed) a directory whose files are read and written through io_uring.
Result<std::unique_ptr<Storage>> OpenUringStorage(const std::string& dir,
                                                  const UringStorageOptions& options = {});

}  // namespace ktmfs::log

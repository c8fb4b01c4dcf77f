// An in-memory Storage that can crash or fail at a chosen write or sync, for deterministic crash
// tests. Each file keeps a durable image (what survives a crash) and the writes issued since its
// last sync; a crash turns the unsynced writes into what a power loss could leave behind.
// Creating, removing and renaming files is durable at once (a simplification: it models a
// filesystem that journals its metadata synchronously).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "log/io.h"

namespace ktmfs::log {

enum class CrashMode {
  kDropUnsynced,        // only synced data survives
  kTearLastWrite,       // plus a sector-aligned prefix of the last write, then a garbage sector
  kKeepRandomUnsynced,  // plus a random subset of the unsynced sectors (reordered power loss)
};

class FaultInjectingStorage : public Storage {
 public:
  explicit FaultInjectingStorage(uint64_t seed = 0, size_t sector = 512);
  ~FaultInjectingStorage() override;

  // Write and sync calls so far, numbered from 1. File::Write with sync counts two events (the
  // writes, then the sync); File::Allocate counts one.
  uint64_t events() const;
  // When event n is about to run, crash instead (the event does not happen).
  void CrashAtEvent(uint64_t n, CrashMode mode);
  void CrashNow(CrashMode mode);
  bool crashed() const;  // after a crash every call fails with EIO until Restart()
  // Reboot: only the durable image remains; files opened before are dead (EIO).
  void Restart();
  // Event n fails with `error` (EIO, ENOSPC, ...) without doing anything; no crash.
  void FailAtEvent(uint64_t n, int error);
  uint64_t syncs() const;
  // Writes and allocations that would make a file larger than this fail with ENOSPC.
  void set_max_file_size(uint64_t bytes);

  // Test helpers: direct access to a file's current contents (durable after Restart).
  std::vector<std::byte> Contents(const std::string& name) const;
  void SetContents(const std::string& name, std::vector<std::byte> data);

  Result<std::unique_ptr<File>> Open(const std::string& name, OpenMode mode) override;
  Status Remove(const std::string& name) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Result<std::vector<std::string>> List() override;
  Status SyncDir() override;
  size_t alignment() const override { return 1; }
  std::string Describe() const override { return "fault-injecting storage"; }

  struct Node;  // one file's images; public for the file class in the .cc

 private:
  friend class FaultFile;
  enum class EventKind { kWrite, kSync };
  // Counts an event and decides its fate; returns non-OK if it must not run.
  Status BeginEventLocked(const std::string& what);
  void CrashLocked(CrashMode mode);

  mutable std::mutex mu_;
  std::mt19937_64 rng_;
  size_t sector_;
  std::map<std::string, std::shared_ptr<Node>> files_;
  uint64_t events_ = 0;
  uint64_t syncs_ = 0;
  uint64_t generation_ = 0;  // bumped at each crash so older handles die
  uint64_t write_seq_ = 0;   // orders unsynced writes across files
  bool crashed_ = false;
  uint64_t crash_at_ = 0;
  CrashMode crash_mode_ = CrashMode::kDropUnsynced;
  uint64_t fail_at_ = 0;
  int fail_error_ = 0;
  uint64_t max_file_size_ = UINT64_MAX;
};

}  // namespace ktmfs::log

// A Storage that wraps another and, while an arming file exists, makes the next durable write
// (a synced Write, or Sync) fail with EIO after it was carried out: what a device does when
// its flush reports an error although the data reached it. For tests of a real mount, where the
// log's own storage cannot be swapped for the in-memory FaultInjectingStorage: the daemon wraps
// its log with it only in builds made with -Dfault_hooks=true, and only when told to
// (KTMFS_FAULT_LOG_SYNC, ktmfs(8)). One fault per arming: the file is removed when it fires.
#pragma once

#include <memory>
#include <string>

#include "log/io.h"

namespace ktmfs::log {

class SyncFaultStorage : public Storage {
 public:
  SyncFaultStorage(std::unique_ptr<Storage> inner, std::string arming_file);

  Result<std::unique_ptr<File>> Open(const std::string& name, OpenMode mode) override;
  Status Remove(const std::string& name) override { return inner_->Remove(name); }
  Status Rename(const std::string& from, const std::string& to) override {
    return inner_->Rename(from, to);
  }
  Result<std::vector<std::string>> List() override { return inner_->List(); }
  Status SyncDir() override { return inner_->SyncDir(); }
  size_t alignment() const override { return inner_->alignment(); }
  std::string Describe() const override { return inner_->Describe(); }

  // After a durable operation on `file` succeeded: EIO if armed (disarming), else OK.
  Status Fire(const std::string& file);

 private:
  std::unique_ptr<Storage> inner_;
  std::string arming_file_;
};

}  // namespace ktmfs::log

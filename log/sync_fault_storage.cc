#include "log/sync_fault_storage.h"

#include <unistd.h>

#include <cerrno>
#include <utility>

namespace ktmfs::log {

namespace {

class SyncFaultFile : public File {
 public:
  SyncFaultFile(std::unique_ptr<File> inner, SyncFaultStorage* storage)
      : inner_(std::move(inner)), storage_(storage) {}

  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) override {
    return inner_->Read(offset, out);
  }
  Status Write(std::span<const WriteOp> ops, bool sync) override {
    KTMFS_RETURN_IF_ERROR(inner_->Write(ops, sync));
    return sync ? storage_->Fire(inner_->name()) : Status::Ok();
  }
  Status Sync() override {
    KTMFS_RETURN_IF_ERROR(inner_->Sync());
    return storage_->Fire(inner_->name());
  }
  Result<uint64_t> Size() override { return inner_->Size(); }
  Status Allocate(uint64_t size) override { return inner_->Allocate(size); }
  const std::string& name() const override { return inner_->name(); }

 private:
  std::unique_ptr<File> inner_;
  SyncFaultStorage* storage_;
};

}  // namespace

SyncFaultStorage::SyncFaultStorage(std::unique_ptr<Storage> inner, std::string arming_file)
    : inner_(std::move(inner)), arming_file_(std::move(arming_file)) {}

Result<std::unique_ptr<File>> SyncFaultStorage::Open(const std::string& name, OpenMode mode) {
  auto f = inner_->Open(name, mode);
  if (!f.ok()) return f.status();
  return std::unique_ptr<File>(new SyncFaultFile(std::move(*f), this));
}

Status SyncFaultStorage::Fire(const std::string& file) {
  // unlink is the test-and-clear: of two flushes racing, one fires.
  if (unlink(arming_file_.c_str()) != 0) return Status::Ok();
  return Status::Error(EIO, Describe() + "/" + file + ": injected flush failure (armed by " +
                                arming_file_ + "); the data was written");
}

}  // namespace ktmfs::log

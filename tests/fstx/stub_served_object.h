// A ServedObject for tests of what serves and what is served: a file of `size` bytes, all
// zero to readers, with no xattrs of its own, and nothing to keep once apply is done.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fs/tx/visibility_gate.h"

namespace ktmfs::fstx {

class StubServedObject : public ServedObject {
 public:
  explicit StubServedObject(off_t size = 0) { st_.st_size = size; }
  const struct stat& Attributes() const override { return st_; }
  Result<size_t> Read(uint64_t, std::span<std::byte>) const override { return size_t{0}; }
  std::optional<Result<std::string>> Xattr(const std::string&) const override {
    return std::nullopt;
  }
  std::vector<std::string> XattrNames(std::vector<std::string> own) const override { return own; }
  Status KeepWhatWasServed() const override { return Status::Ok(); }

 private:
  struct stat st_ {};
};

}  // namespace ktmfs::fstx

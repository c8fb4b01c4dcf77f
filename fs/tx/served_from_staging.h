// What readers of a big file are answered while a commit's apply writes its data in place, after
// letting readers into everything else (FsResourceManager::ApplyAndFinish): the file as the
// commit leaves it, read from where its transaction left the data. The bytes come from the
// staged file over the committed one (StagedFile::Read); apply writes only the ranges the staged
// file holds and cuts the file past its new end, so the committed bytes read here are ones it
// leaves alone. The attributes are the transaction's view of the file at its commit, taken before
// apply changes the file at all.
#pragma once

#include <sys/stat.h>

#include "fs/tx/overlay.h"
#include "fs/tx/staging.h"
#include "fs/tx/visibility_gate.h"

namespace ktmfs::fstx {

class ServedFromStaging : public ServedObject {
 public:
  // `staged` must outlive this (the gate's hold that serves it waits for its readers).
  // `overlay` is the transaction's view of the file's backing directory, for `object`.
  static Result<std::shared_ptr<const ServedObject>> Make(const StagedFile* staged,
                                                          const TxOverlay& overlay,
                                                          const ObjectId& object);

  const struct stat& Attributes() const override { return attributes_; }
  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) const override;

 private:
  ServedFromStaging(const StagedFile* staged, const struct stat& attributes)
      : staged_(staged), attributes_(attributes) {}
  const StagedFile* const staged_;
  const struct stat attributes_;
};

}  // namespace ktmfs::fstx

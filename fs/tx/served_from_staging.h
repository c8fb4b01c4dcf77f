// What readers of a file written late (Applier::LateObjects) are answered while a commit's apply
// writes its data in place, after letting readers into everything else
// (FsResourceManager::ApplyAndFinish): the file as the commit leaves it, read from where its
// transaction left the data. The bytes come from the staged file over the committed one
// (StagedFile::Read); apply writes only the ranges the staged file holds and cuts the file past its
// new end, so the committed bytes read here are ones it leaves alone. The attributes are the
// transaction's view of the file at its commit, taken once apply has placed its names (so its link
// count is the file's own) and before it changes its content or attributes. Its modification time
// is the view's (the transaction's last write or its explicit time), or the commit's instant where
// the view has none, and the file keeps it once apply is done (KeepWhatWasServed); its change time
// moves then, as it does at every change the backing filesystem makes.
#pragma once

#include <sys/stat.h>

#include "fs/tx/overlay.h"
#include "fs/tx/staging.h"
#include "fs/tx/visibility_gate.h"

namespace ktmfs::fstx {

class ServedFromStaging : public ServedObject {
 public:
  // `overlay` is the transaction's view of the file's backing directory, `staging` its staging
  // there, which holds `staged`; all three must outlive this (the gate's hold that serves it
  // waits for its readers before apply drops them).
  static Result<std::shared_ptr<const ServedObject>> Make(const TxOverlay* overlay,
                                                          const TxStaging* staging,
                                                          const StagedFile* staged,
                                                          const ObjectId& object);

  const struct stat& Attributes() const override { return attributes_; }
  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) const override;
  std::optional<Result<std::string>> Xattr(const std::string& name) const override;
  std::vector<std::string> XattrNames(std::vector<std::string> own) const override;
  Status KeepWhatWasServed() const override;

 private:
  ServedFromStaging(const TxOverlay* overlay, const TxStaging* staging, const StagedFile* staged,
                    const ObjectId& object, const struct stat& attributes)
      : overlay_(overlay),
        staging_(staging),
        staged_(staged),
        object_(object),
        attributes_(attributes) {}
  const TxOverlay* const overlay_;
  const TxStaging* const staging_;
  const StagedFile* const staged_;
  const ObjectId object_;
  const struct stat attributes_;
};

}  // namespace ktmfs::fstx

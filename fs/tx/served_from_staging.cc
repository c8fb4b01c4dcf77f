#include "fs/tx/served_from_staging.h"

#include <algorithm>
#include <cstring>

namespace ktmfs::fstx {

Result<std::shared_ptr<const ServedObject>> ServedFromStaging::Make(const StagedFile* staged,
                                                                    const TxOverlay& overlay,
                                                                    const ObjectId& object) {
  struct stat st;
  KTMFS_RETURN_IF_ERROR(staged->StatCommitted(&st));
  ShowViewAttributes(&st, overlay.Attributes(object), overlay.Stamps(object), false);
  return std::shared_ptr<const ServedObject>(new ServedFromStaging(staged, st));
}

Result<size_t> ServedFromStaging::Read(uint64_t offset, std::span<std::byte> out) const {
  // The size the readers are told is the end, whatever the staged file's own says.
  const uint64_t size = static_cast<uint64_t>(attributes_.st_size);
  if (offset >= size) return size_t{0};
  out = out.first(static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset)));
  auto n = staged_->Read(offset, out);
  if (!n.ok()) return n.status();
  std::memset(out.data() + *n, 0, out.size() - *n);
  return out.size();
}

}  // namespace ktmfs::fstx

#include "fs/tx/served_from_staging.h"

#include <errno.h>
#include <time.h>

#include <algorithm>
#include <cstring>

namespace ktmfs::fstx {

Result<std::shared_ptr<const ServedObject>> ServedFromStaging::Make(const TxOverlay* overlay,
                                                                    const TxStaging* staging,
                                                                    const StagedFile* staged,
                                                                    const ObjectId& object) {
  struct stat st;
  KTMFS_RETURN_IF_ERROR(staged->StatCommitted(&st));
  // Apply has already placed the file's names (Applier::Place, before let_in): its links are
  // the commit's, which the view's own count would add a second time.
  const nlink_t links = st.st_nlink;
  const std::optional<AttrOverride> attrs = overlay->Attributes(object);
  const std::optional<ViewStamps> stamps = overlay->Stamps(object);
  ShowViewAttributes(&st, attrs, stamps, false);
  st.st_nlink = links;
  // Its data changes: the committed file's own time would say it had not.
  if (!(attrs && attrs->mtime_ns) && !(stamps && stamps->mtime)) {
    if (::clock_gettime(CLOCK_REALTIME, &st.st_mtim) != 0)
      return Status::FromErrno("the time to show for the file");
  }
  return std::shared_ptr<const ServedObject>(
      new ServedFromStaging(overlay, staging, staged, object, st));
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

std::optional<Result<std::string>> ServedFromStaging::Xattr(const std::string& name) const {
  XattrLookup x = overlay_->GetXattr(object_, name);
  switch (x.kind) {
    case XattrLookup::Kind::kUnchanged:
      return std::nullopt;
    case XattrLookup::Kind::kRemoved:
      return Result<std::string>(Status::Error(ENODATA, name));
    case XattrLookup::Kind::kValue:
      if (x.stored) return staging_->LoadValue(*x.stored);
      return Result<std::string>(std::move(x.value));
  }
  return std::nullopt;
}

std::vector<std::string> ServedFromStaging::XattrNames(std::vector<std::string> own) const {
  return overlay_->Xattrs(object_, own);
}

Status ServedFromStaging::KeepWhatWasServed() const {
  return staged_->SetCommittedMtime(attributes_.st_mtim);
}

}  // namespace ktmfs::fstx

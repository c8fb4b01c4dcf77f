#include "fs/tx/reserve_space.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <utility>
#include <vector>

namespace ktmfs::fstx {

Status ReserveApplySpace(const std::string& backing_root, const ApplyPlan& plan) {
  // The ranges per file, so each file is opened once.
  std::map<const PlannedObject*, std::vector<std::pair<uint64_t, uint64_t>>> ranges;
  for (const Op& op : plan.content_ops) {
    if (op.kind != OpKind::kWriteExtent && op.kind != OpKind::kWriteData) continue;
    const PlannedObject* o = plan.Find(op.object);
    // A deleted file may have names the transaction never saw, and then lives on (apply.h).
    if (o == nullptr || o->is_new()) continue;
    const uint64_t length = op.kind == OpKind::kWriteData ? op.data.size() : op.length;
    if (length > 0) ranges[o].emplace_back(op.offset, length);
  }
  for (const auto& [o, list] : ranges) {
    const std::string path = backing_root + "/" + o->original;
    int fd = ::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st;
    // Only the object the transaction changed: whatever else sits at the name is not ours.
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_dev != o->id.dev ||
        st.st_ino != o->id.ino || (o->deleted() && st.st_nlink < 2)) {
      ::close(fd);
      continue;
    }
    for (const auto& [offset, length] : list) {
      if (::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                      static_cast<off_t>(length)) == 0) {
        continue;
      }
      const int e = errno;
      if (e == ENOSPC || e == EDQUOT) {
        ::close(fd);
        return Status::Error(e, "no space to apply " + std::to_string(length) + " bytes at " +
                                    std::to_string(offset) + " of " + o->original + ": " +
                                    std::strerror(e));
      }
      break;  // EOPNOTSUPP and the like: this file cannot be reserved
    }
    ::close(fd);
  }
  return Status::Ok();
}

}  // namespace ktmfs::fstx

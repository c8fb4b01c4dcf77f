#include "fs/tx/replacement.h"

#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "fs/tx/extent_map.h"
#include "fs/tx/xattr_names.h"

namespace ktmfs::fstx {
namespace {

bool IsData(const Op& op) {
  return op.kind == OpKind::kWriteExtent || op.kind == OpKind::kWriteData ||
         (op.kind == OpKind::kSetattr && (op.set_mask & kSetSize));
}

uint64_t WriteLength(const Op& op) {
  return op.kind == OpKind::kWriteData ? op.data.size() : op.length;
}

// The names of the xattrs of the file `path` leads to (or of `fd`'s).
Result<std::set<std::string>> XattrNames(const char* path, int fd) {
  std::vector<char> buf(4096);
  for (;;) {
    ssize_t n = path != nullptr ? ::listxattr(path, buf.data(), buf.size())
                                : ::flistxattr(fd, buf.data(), buf.size());
    if (n >= 0) {
      std::set<std::string> names;
      for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(buf.data() + i)) + 1)
        names.emplace(buf.data() + i);
      return names;
    }
    if (errno == ENOTSUP) return std::set<std::string>{};
    if (errno != ERANGE) return Status::FromErrno("list xattrs");
    buf.resize(buf.size() * 4);
  }
}

// The file capability goes as with any write; the integrity xattrs describe the old content.
bool Carried(const std::string& name) {
  return name != kCapabilityXattr && name != "security.ima" && name != "security.evm";
}

Result<std::string> XattrValue(const char* path, const std::string& name) {
  std::string value(256, '\0');
  for (;;) {
    ssize_t n = ::getxattr(path, name.c_str(), value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (errno != ERANGE) return Status::FromErrno("get xattr " + name);
    value.resize(value.size() * 4);
  }
}

}  // namespace

std::optional<Replacement> FindReplacement(const std::vector<Op>& ops, const ObjectId& id,
                                           uint64_t size_now) {
  Replacement r;
  uint64_t lowest = size_now;
  ExtentMap written;
  for (const Op& op : ops) {
    if (op.object != id || !IsData(op)) continue;
    r.data_ops.push_back(&op);
    if (op.kind == OpKind::kSetattr) {
      lowest = std::min(lowest, op.size);
      continue;
    }
    written.Add(op.offset, WriteLength(op));
    if (op.kind == OpKind::kWriteExtent) {
      // One staged file per object; two would mean the records are not what apply expects.
      if (!r.staged_file.empty() && r.staged_file != op.staged_file) return std::nullopt;
      r.staged_file = op.staged_file;
    }
  }
  if (r.data_ops.empty()) return std::nullopt;
  // Whole if every byte below `lowest` was written.
  auto pieces = written.Split(0, lowest);
  if (std::any_of(pieces.begin(), pieces.end(), [](const auto& p) { return !p.written; }))
    return std::nullopt;
  return r;
}

Status CopyOwnerModeXattrs(const char* from, const struct stat& st, int to,
                           const std::string& shown) {
  // The owner before the mode: a chown of a file drops its set-id bits.
  if (::fchown(to, st.st_uid, st.st_gid) != 0)
    return Status::FromErrno("give the new content of " + shown + " its owner");
  if (::fchmod(to, st.st_mode & 07777) != 0)
    return Status::FromErrno("give the new content of " + shown + " its mode");
  // Writing a file leaves its access time and sets its modification time.
  const timespec times[2] = {st.st_atim, {0, UTIME_NOW}};
  if (::futimens(to, times) != 0)
    return Status::FromErrno("give the new content of " + shown + " its access time");
  auto names = XattrNames(from, -1);
  if (!names.ok()) return names.status().Annotate(shown);
  auto had = XattrNames(nullptr, to);
  if (!had.ok()) return had.status().Annotate("the new content of " + shown);
  for (const std::string& name : *had) {
    if (names->count(name) > 0 && Carried(name)) continue;
    if (::fremovexattr(to, name.c_str()) != 0 && errno != ENODATA)
      return Status::FromErrno("remove xattr " + name + " from the new content of " + shown);
  }
  for (const std::string& name : *names) {
    if (!Carried(name)) continue;
    auto value = XattrValue(from, name);
    if (!value.ok()) return value.status().Annotate(shown);
    if (::fsetxattr(to, name.c_str(), value->data(), value->size(), 0) != 0)
      return Status::FromErrno("set xattr " + name + " on the new content of " + shown);
  }
  return Status::Ok();
}

}  // namespace ktmfs::fstx

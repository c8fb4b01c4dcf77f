#include "fs/tx/reserve_space.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "fs/tx/beneath.h"
#include "fs/tx/overwrite_in_place.h"
#include "fs/tx/staging.h"
#include "fs/tx/value_file.h"

namespace ktmfs::fstx {

Status ReserveApplySpace(const std::string& backing_root, const ApplyPlan& plan,
                         std::optional<WriterIds> record_owner) {
  struct Range {
    uint64_t offset, length;
    bool in_record;  // a small write's, whose data its record carries
  };
  // The ranges per file, so each file is opened once.
  std::map<const PlannedObject*, std::vector<Range>> ranges;
  for (const Op& op : plan.content_ops) {
    if (op.kind != OpKind::kWriteExtent && op.kind != OpKind::kWriteData) continue;
    const PlannedObject* o = plan.Find(op.object);
    // A deleted file may have names the transaction never saw, and then lives on (apply.h).
    if (o == nullptr || o->is_new()) continue;
    const uint64_t length = op.kind == OpKind::kWriteData ? op.data.size() : op.length;
    if (length > 0) ranges[o].push_back({op.offset, length, op.kind == OpKind::kWriteData});
  }
  if (ranges.empty()) return Status::Ok();
  const bool in_place = OverwritesInPlace(backing_root);
  const BackingRoot root(backing_root);
  for (const auto& [o, list] : ranges) {
    const BackingName name = root.Name(o->original);
    int fd = ::open(name.path(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st;
    // Only the object the transaction changed: whatever else sits at the name is not ours.
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_dev != o->id.dev ||
        st.st_ino != o->id.ino || (o->deleted() && st.st_nlink < 2)) {
      ::close(fd);
      continue;
    }
    Status s;
    bool allocated_some = false;
    for (const auto& [offset, length, in_record] : list) {
      // Where apply's write finds every block already it needs none new, and fallocate would
      // only stamp the mtime.
      if (in_place && HasBlocks(fd, static_cast<uint64_t>(st.st_size), offset, length)) continue;
      allocated_some = true;
      std::optional<WriterIdentity> as;
      if (in_record && record_owner) as.emplace(*record_owner);
      if (::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                      static_cast<off_t>(length)) == 0) {
        continue;
      }
      const int e = errno;
      if (e == ENOSPC || e == EDQUOT) {
        s = Status::FromErrno(e, "no space to apply " + std::to_string(length) + " bytes at " +
                                     std::to_string(offset) + " of " + o->original);
      }
      break;  // EOPNOTSUPP and the like: this file cannot be reserved
    }
    // ext4 stamps the file's mtime at fallocate: everyone would see a commit that may yet be
    // refused (txcheck --disk-mb, seed 1023). Its ctime cannot be put back.
    if (allocated_some) {
      const timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
      (void)::futimens(fd, times);
    }
    ::close(fd);
    KTMFS_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

namespace {

std::string PlaceholderPath(const std::string& staging_dir) {
  return staging_dir + "/space";
}

// What an entry of `name`'s last component takes in a directory block (ext4: an 8-byte header
// and the name, in 4-byte units).
uint64_t EntryBytes(const std::string& name) {
  const size_t slash = name.rfind('/');
  const uint64_t len = slash == std::string::npos ? name.size() : name.size() - slash - 1;
  return (8 + len + 3) / 4 * 4;
}

// New names for one directory: how many, and their entries' bytes.
struct NewEntries {
  uint64_t names = 0;
  uint64_t bytes = 0;
  void Add(const std::string& name) {
    names++;
    bytes += EntryBytes(name);
  }
};

// The blocks a directory now `blocks` long (0: made empty by the transaction or by prepare) may
// take for `e`, on ext4 with blocks of `block` bytes. An empty directory's first block takes
// entries until it is full. A full leaf block splits in two on the next insert, each half
// full: so at most one split per block there now, and one more per half block of new entries
// since, and never more than one per name (new names that each land in another full leaf cost a
// block each). A full one-block directory becomes hashed: its block becomes the index root, and
// its entries take two new leaves. Past a few hundred leaves the index takes blocks of its own.
uint64_t DirectoryGrowth(uint64_t blocks, const NewEntries& e, uint64_t block) {
  if (blocks == 0) {
    if (e.bytes + 24 <= block) return 0;  // with "." and ".."
    blocks = 1;
  }
  const uint64_t splits = std::min(e.names, blocks + (2 * e.bytes + block - 1) / block);
  uint64_t growth = splits + (blocks == 1 ? 1 : 0);
  if (const uint64_t leaves = blocks + growth; leaves > 400) growth += leaves / 200 + 1;
  return growth;
}

// Blocks of the directory at `rel` before apply (0 if it is not there: made by the
// transaction).
uint64_t BlocksNow(const std::string& backing_root, const std::optional<std::string>& rel,
                   uint64_t block) {
  if (!rel) return 0;
  struct stat st;
  const std::string path = rel->empty() ? backing_root : backing_root + "/" + *rel;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
  return (static_cast<uint64_t>(st.st_size) + block - 1) / block;
}

uint64_t MetadataBytes(const std::string& backing_root, const ApplyPlan& plan) {
  struct statvfs fs;
  const uint64_t block = ::statvfs(backing_root.c_str(), &fs) == 0 && fs.f_bsize > 0
                             ? static_cast<uint64_t>(fs.f_bsize)
                             : 4096;
  // Each directory gaining names (as named after apply).
  std::map<std::string, NewEntries> growing_dirs;
  // Apply's parking directory (apply.h), made empty by prepare, gains a name per object that
  // loses its original one: a mass removal grows it too.
  NewEntries parked;
  for (const PlannedObject& o : plan.objects) {
    for (const std::string& name : o.finals)
      if (o.is_new() || name != o.original) growing_dirs[Parent(name)].Add(name);
    if (o.parks()) parked.Add("p" + std::to_string(o.id.dev) + "." + std::to_string(o.id.ino));
  }
  std::map<ObjectId, uint64_t> xattr_bytes;
  for (const Op& op : plan.content_ops)
    if (op.kind == OpKind::kSetxattr)
      xattr_bytes[op.object] += op.name.size() + ValueSize(op) + 32;  // ext4's entry header
  const NamesBeforeApply before(plan);
  uint64_t blocks = DirectoryGrowth(0, parked, block);
  for (const auto& [dir, entries] : growing_dirs)
    blocks += DirectoryGrowth(BlocksNow(backing_root, before.Of(dir), block), entries, block);
  for (const auto& [object, n] : xattr_bytes)
    blocks += (n + block - 1) / block;
  return blocks * block;
}

}  // namespace

Status ReserveMetadataSpace(const std::string& backing_root, const std::string& staging_dir,
                            const ApplyPlan& plan) {
  const uint64_t bytes = MetadataBytes(backing_root, plan);
  if (bytes == 0) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(MakeDirs(staging_dir));
  const std::string placeholder = PlaceholderPath(staging_dir);
  int fd = ::open(placeholder.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    return Status::FromErrno(e, "creating " + placeholder);
  }
  Status s;
  if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    if (e == ENOSPC || e == EDQUOT)
      s = Status::Error(e, "no space for the " + std::to_string(bytes) +
                               " bytes of directory entries and xattrs apply needs (" +
                               placeholder + "): " + std::strerror(e));
  }
  ::close(fd);
  if (!s.ok()) ::unlink(placeholder.c_str());
  return s;
}

namespace {

// The xattrs at `path` (not following a symlink), or an empty map if there are none to read.
// A fresh probe file (a directory, with `dir`) at `probe`, open; -1 and errno if it cannot be
// made.
int MakeProbe(const std::string& probe, bool dir) {
  ::unlink(probe.c_str());
  ::rmdir(probe.c_str());
  if (!dir)
    return ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (::mkdir(probe.c_str(), 0700) != 0) return -1;
  return ::open(probe.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

void RemoveProbe(const std::string& probe, bool dir) {
  if (dir) {
    ::rmdir(probe.c_str());
  } else {
    ::unlink(probe.c_str());
  }
}

// A setxattr's errno that says the value does not fit (rather than that it is not allowed).
bool NoRoom(int e) {
  return e == ENOSPC || e == E2BIG || e == ERANGE || e == EDQUOT;
}

std::map<std::string, std::string> PresentXattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  std::vector<char> names(65536);
  const ssize_t n = ::llistxattr(path.c_str(), names.data(), names.size());
  for (ssize_t i = 0; i < n;) {
    const std::string name(names.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    std::vector<char> value(65536);
    const ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (v >= 0) out[name].assign(value.data(), static_cast<size_t>(v));
  }
  return out;
}

}  // namespace

int XattrsFitTogether(const std::string& staging_dir, bool dir,
                      const std::vector<std::pair<std::string, std::string>>& xattrs) {
  const std::string probe = staging_dir + "/xattr-fit." + std::to_string(::gettid());
  const int fd = MakeProbe(probe, dir);
  if (fd < 0) return 0;
  int err = 0;
  for (const auto& [name, value] : xattrs) {
    if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) == 0) continue;
    if (NoRoom(errno)) {
      err = errno;
      break;
    }
  }
  ::close(fd);
  RemoveProbe(probe, dir);
  return err;
}

Status ProbeXattrs(const std::string& backing_root, const std::string& staging_dir,
                   const ApplyPlan& plan) {
  const BackingRoot root(backing_root);
  // One object at a time, so that only one object's values are in memory at once: a
  // transaction's big values are kept on disk (value_file.h).
  std::map<ObjectId, std::vector<const Op*>> ops_of;
  for (const Op& op : plan.content_ops)
    if (op.kind == OpKind::kSetxattr || op.kind == OpKind::kRemovexattr)
      ops_of[op.object].push_back(&op);
  if (ops_of.empty()) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(MakeDirs(staging_dir));
  const std::string probe = staging_dir + "/xattr-probe";
  for (const auto& [object, ops] : ops_of) {
    const PlannedObject* o = plan.Find(object);
    // Each final value is where it is: the present ones in memory (the backing filesystem
    // bounds them), the transaction's as its last op for the name, read when it is tried.
    std::map<std::string, std::string> present;
    if (o != nullptr && !o->is_new()) present = PresentXattrs(root.Name(o->original).path());
    std::map<std::string, const Op*> xattrs;
    for (const auto& [name, value] : present)
      xattrs.emplace(name, nullptr);
    for (const Op* op : ops) {
      if (op->kind == OpKind::kRemovexattr) {
        xattrs.erase(op->name);
      } else {
        xattrs[op->name] = op;
      }
    }
    if (xattrs.empty()) continue;
    // A directory's attributes are tried on a directory: some belong to directories only (a
    // default ACL).
    const PlannedObject* planned = o;
    bool dir = false;
    if (planned != nullptr && planned->is_new()) {
      dir = planned->created_as == OpKind::kMkdir;
    } else if (planned != nullptr) {
      struct stat st;
      dir = ::lstat(root.Name(planned->original).path(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    int fd = MakeProbe(probe, dir);
    if (fd < 0) {
      const int e = errno;
      return Status::FromErrno(e, "creating " + probe);
    }
    Status s;
    for (const auto& [name, op] : xattrs) {
      std::string loaded;
      if (op != nullptr && op->stored_value) {
        auto v = ReadStoredValue(staging_dir, *op->stored_value);
        if (!v.ok()) {
          s = v.status();
          break;
        }
        loaded = std::move(*v);
      }
      const std::string& value =
          op == nullptr ? present[name] : (op->stored_value ? loaded : op->value);
      if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) == 0) continue;
      const int e = errno;
      // An attribute the transaction left alone that a plain file cannot carry (a security
      // module's label, say) is the object's own business; only room is the probe's question.
      const bool room = NoRoom(e);
      const bool changed =
          std::any_of(ops.begin(), ops.end(), [&](const Op* c) { return c->name == name; });
      if (!room && !changed) continue;
      s = Status::Error(
          e, "the backing filesystem cannot hold xattr " + name + " (" +
                 std::to_string(value.size()) + " bytes) of " +
                 (planned && !planned->is_new() ? planned->original : std::string("a new file")) +
                 " with its others: " + std::strerror(e));
      break;
    }
    ::close(fd);
    RemoveProbe(probe, dir);
    KTMFS_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

Status RemovePlaceholder(const std::string& staging_dir) {
  const std::string placeholder = PlaceholderPath(staging_dir);
  if (::unlink(placeholder.c_str()) == 0 || errno == ENOENT) return Status::Ok();
  const int e = errno;
  return Status::FromErrno(e, "removing " + placeholder);
}

}  // namespace ktmfs::fstx

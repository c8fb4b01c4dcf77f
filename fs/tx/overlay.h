// A transaction's private view of one backing directory: what its operations changed in the
// namespace, attributes and xattrs, kept in memory so the transaction's own requests are
// answered as if it had committed while everybody else reads the backing directory. It is fed
// the same ops the RM logs (so it can be rebuilt from the log) and answers by path relative to
// the backing root ("" is the root). Anything it does not know it reports as unchanged, and the
// caller asks the backing directory (at the backing path it names, which differs from the view
// path below a directory the transaction renamed).
//
// Besides the ops it holds the times and link counts the view shows (ViewStamps): the operations
// stamp them as they are made. They are the one part not rebuilt from the log, which has no
// clock: the backing objects get their own times when apply changes them.
//
// Apply validates against the view where that is possible without the backing directory
// (a name the view already holds or removed, a directory the view knows has entries). Where the
// answer needs the backing directory (a create over a name only the backing directory has, an
// rmdir of a backing directory with unchanged entries), the caller checks before calling.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fs/tx/records.h"
#include "log/owned_mutex.h"
#include "log/status.h"

namespace ktmfs::fstx {

struct OverlayLookup {
  enum class Kind { kUnchanged, kRemoved, kEntry };
  Kind kind = Kind::kUnchanged;
  ObjectId object{};  // kEntry
  uint32_t type = 0;  // kEntry: S_IFMT bits (0 if the backing object could not be examined)
  // kUnchanged: where to ask the backing directory for this name. kEntry of an existing
  // object: where that object is in the backing directory.
  std::string backing_path{};
};

struct OverlayDirEntry {
  std::string name;
  OverlayLookup entry;  // kUnchanged (a backing entry as it is) or kEntry
};

// The attributes the transaction set; unset members are the backing object's.
struct AttrOverride {
  std::optional<uint32_t> mode;  // with S_IFMT bits for objects the transaction created
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  // Absolute (truncate, and a symlink's target length). Without it the size is the backing
  // object's, or for a new file its staged file's, grown by writes past its end.
  std::optional<uint64_t> size;
  uint64_t written_end = 0;
  std::optional<int64_t> atime_ns;
  std::optional<int64_t> mtime_ns;

  uint64_t Size(uint64_t backing_size) const {
    uint64_t s = size ? *size : backing_size;
    return s > written_end ? s : written_end;
  }
};

// What the view shows of an object beyond its AttrOverride: when the transaction last changed
// it, and how many links it gained or lost. Unset times are the backing object's.
struct ViewStamps {
  std::optional<timespec> mtime, ctime;
  int nlink_delta = 0;
};

// What the view shows of an object whose backing attributes are `st`: the transaction's
// overrides and stamps put over them. `staged_content`: a file the transaction created, whose
// staged file is its whole content (its size, mtime and a later ctime are the staged file's).
void ShowViewAttributes(struct stat* st, const std::optional<AttrOverride>& attrs,
                        const std::optional<ViewStamps>& stamps, bool staged_content);

struct XattrLookup {
  enum class Kind { kUnchanged, kRemoved, kValue };
  Kind kind = Kind::kUnchanged;
  std::string value;  // kValue, unless stored
  // kValue: where the transaction's staging keeps a value too big for memory (value_file.h).
  std::optional<StoredValue> stored;
};

class TxOverlay {
 public:
  // `backing_root` is only read (lstat) to learn the type of an unchanged object renamed.
  explicit TxOverlay(std::string backing_root);

  // Records one operation. On error (errno code: ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR,
  // EINVAL, ENODATA) the view is unchanged.
  Status Apply(const Op& op);

  // ENOENT/ENOTDIR if `dir_path` is not a directory in the view.
  Result<OverlayLookup> Lookup(const std::string& dir_path, const std::string& name) const;
  // Where the backing directory at `backing_path` is in the view (its view path), for requests
  // that name a committed directory by identity; ENOENT if the transaction removed it or a
  // directory above it, or put something else under its name.
  Result<std::string> ViewPath(const std::string& backing_path) const;
  // Where the backing entries of the view directory `dir_path` are listed; nullopt for a
  // directory the transaction created (it has only its own entries).
  Result<std::optional<std::string>> BackingDir(const std::string& dir_path) const;
  // `backing_names`: the entries of BackingDir(dir_path) in the backing directory's order,
  // without "." and "..". Removed names are dropped, names the transaction added are appended
  // in name order.
  Result<std::vector<OverlayDirEntry>> ReadDir(const std::string& dir_path,
                                               const std::vector<std::string>& backing_names) const;

  std::optional<AttrOverride> Attributes(const ObjectId& object) const;

  // The transaction changed `object` at `now`: its status (ctime), and its data or entries
  // (mtime) if `data`.
  void Touch(const ObjectId& object, const timespec& now, bool data);
  // An explicit modification time the view shows (utimensat on a file whose mtime is not logged).
  void SetMtime(const ObjectId& object, const timespec& mtime);
  // `object` gained (`delta` > 0) or lost links in the view: a link, an unlink, a directory
  // made, moved or removed under it.
  void AddLinks(const ObjectId& object, int delta);
  std::optional<ViewStamps> Stamps(const ObjectId& object) const;
  // What one object's stamps keep in memory, about: a map node with its key.
  static constexpr uint64_t kStampBytes = sizeof(ObjectId) + sizeof(ViewStamps) + 48;
  // `backing_names`: the backing object's xattr names (empty for new objects).
  std::vector<std::string> Xattrs(const ObjectId& object,
                                  const std::vector<std::string>& backing_names) const;
  XattrLookup GetXattr(const ObjectId& object, const std::string& name) const;
  std::optional<std::string> Readlink(const ObjectId& object) const;

  // What commit or rollback must invalidate in the kernel's caches of the committed view, and
  // what is served with zero timeouts meanwhile: every object whose name, attributes or xattrs
  // the transaction changed, and every (backing directory, name) whose entry it changed there.
  std::vector<ObjectId> TouchedObjects() const;
  std::vector<std::pair<std::string, std::string>> ChangedBackingEntries() const;

 private:
  struct Entry {
    bool removed = false;
    ObjectId object{};
    uint32_t type = 0;
    std::string backing_path{};  // existing objects
    // Whether the backing directory holds this name: removing the entry must then leave a
    // tombstone; otherwise the name simply disappears from the view.
    bool backing_has_name = false;
  };
  struct Dir {
    std::optional<std::string> backing;  // nullopt: created by the transaction
    std::map<std::string, Entry> entries;
  };
  struct Resolved {
    int error = 0;  // ENOENT, ENOTDIR
    const Dir* dir = nullptr;
    std::optional<std::string> backing;
  };
  // What a name is in the view (mu_ held).
  struct NameState {
    bool exists = false;  // known to exist (a live entry, or a backing name `maybe`)
    bool unchanged = false;
    Entry entry{};  // live entry, or the backing object for unchanged names
  };

  Resolved Resolve(const std::string& path) const;
  Result<Dir*> Materialize(const std::string& path);
  Result<NameState> Name(const std::string& path, const ObjectId& object) const;
  bool HasLiveEntries(const std::string& dir_path) const;
  // Moves dirs_ keys at and below `from` to `to`.
  std::map<std::string, Dir> TakeSubtree(const std::string& path);
  void PutSubtree(std::map<std::string, Dir> subtree, const std::string& from,
                  const std::string& to);

  Status Create(const Op& op, uint32_t type);
  Status Link(const Op& op);
  Status Remove(const Op& op, bool dir);
  Status Rename(const Op& op);
  Status Setxattr(const Op& op);
  Status Removexattr(const Op& op);

  const std::string backing_root_;
  mutable OwnedMutex mu_;
  std::map<std::string, Dir> dirs_;  // by view path; every directory the tx created or moved
  std::map<ObjectId, AttrOverride> attrs_;
  std::map<ObjectId, ViewStamps> stamps_;
  struct XattrValue {
    std::string bytes;  // unless stored
    std::optional<StoredValue> stored;
  };
  std::map<ObjectId, std::map<std::string, std::optional<XattrValue>>> xattrs_;
  std::map<ObjectId, std::string> symlinks_;
  std::set<ObjectId> unlinked_;  // objects that lost a name (unlink, rmdir, replaced by rename)
};

}  // namespace ktmfs::fstx

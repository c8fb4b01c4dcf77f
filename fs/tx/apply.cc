#include "fs/tx/apply.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "fs/tx/beneath.h"
#include "fs/tx/direct_io.h"
#include "fs/tx/overwrite_in_place.h"
#include "fs/tx/owner_access.h"
#include "fs/tx/replacement.h"
#include "fs/tx/reserve_space.h"
#include "fs/tx/staging.h"
#include "fs/tx/sync_together.h"
#include "fs/tx/value_file.h"

namespace ktmfs::fstx {
namespace {

// The file a replacement's new content is made in when no staged file holds it.
std::string MadeContentPath(const std::string& staging_dir, const ObjectId& id) {
  return staging_dir + "/r" + std::to_string(id.dev) + "." + std::to_string(id.ino);
}

// Where a replacement's new content may be, and so where the old file is once the names were
// exchanged: the staged file, or the file made for it.
std::vector<std::string> NewContentNames(const std::string& staging_dir,
                                         const std::vector<Op>& content_ops, const ObjectId& id) {
  std::vector<std::string> names{MadeContentPath(staging_dir, id)};
  for (const Op& op : content_ops)
    if (op.object == id && op.kind == OpKind::kWriteExtent)
      names.push_back(staging_dir + "/" + op.staged_file);
  return names;
}

bool HoldsObject(const std::string& path, const ObjectId& id) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && st.st_dev == id.dev && st.st_ino == id.ino;
}

class Applier {
 public:
  Applier(const ApplyTarget& t, const ApplyPlan& plan, const MutationHook& hook,
          const std::function<ReplaceWhen(const ObjectId&)>& replace_when)
      : t_(t), plan_(plan), hook_(hook), replace_when_(replace_when), root_(t.backing_root) {}
  // A run that stopped before ReplaceFiles leaves nothing made early behind (a retry makes it
  // again).
  ~Applier() { DropUnusedEarly(); }

  // Before the gate closes (ApplyChanges' `close_gate`): the data of every new content that
  // ReplaceFiles will exchange and that the records carry, written into the file Replace would
  // write it into, so that under the gate only the attributes and the exchange are left,
  // however much data there is. (A staged file that is the new content needs nothing.) The old
  // file's owner, mode, xattrs and times are still copied under the gate, as they are then.
  // Staging is all this changes, so it is no step for the mutation hook: a run stopped anywhere
  // writes it again. Replace asks `replace_when_` again under the gate and uses what it finds
  // here; the rest goes (DropUnusedEarly). A failure here leaves the file to Replace. Less data
  // than kEarlyDataMin is left to Replace too: opening the file again under the gate would cost
  // about what writing it there does (a script's loop of 4 KiB rewrites ran ~5% slower).
  static constexpr uint64_t kEarlyDataMin = 64 << 10;
  void MakeReplacementsEarly() {
    for (const auto& o : plan_.objects) {
      if (o.is_new() || o.deleted() || o.finals.size() != 1 || o.finals[0] != o.original) continue;
      BackingName path = Backing(o.original);
      if (path.error() != 0 || !Holds(path, o.id)) continue;
      const ReplaceWhen when = replace_when_ ? replace_when_(o.id) : ReplaceWhen::kIfWhole;
      if (when != ReplaceWhen::kIfWhole) continue;  // kIfWrittenOnce: only staged files
      struct stat st;
      if (::lstat(path.path(), &st) != 0 || !Replaceable(st, o.id)) continue;
      auto r = FindReplacement(plan_.content_ops, o.id, static_cast<uint64_t>(st.st_size));
      if (!r || !r->staged_file.empty()) continue;
      uint64_t bytes = 0;
      for (const Op* op : r->data_ops)
        bytes += op->data.size();
      if (bytes < kEarlyDataMin) continue;
      const std::string content = MadeContentName(o.id);
      int fd = -1;
      Status made = OpenNewContent(*r, content, &fd);
      if (made.ok()) made = FillNewContent(*r, fd, content);
      if (fd >= 0) ::close(fd);
      if (made.ok()) {
        early_[o.id] = content;
      } else {
        ::unlink(content.c_str());
      }
    }
  }

  Result<AppliedChanges> Run(const LetReadersIn& let_in) {
    // What prepare set aside for the directory entries and xattrs below (reserve_space.h).
    KTMFS_RETURN_IF_ERROR(RemovePlaceholder(t_.staging_dir));
    KTMFS_RETURN_IF_ERROR(Park());
    KTMFS_RETURN_IF_ERROR(Place());
    KTMFS_RETURN_IF_ERROR(ReplaceFiles());
    DropUnusedEarly();
    if (let_in) late_ = LateObjects();
    KTMFS_RETURN_IF_ERROR(Content(Pass::kAllButLate));
    KTMFS_RETURN_IF_ERROR(Unpark());
    if (let_in) {
      let_in(std::vector<ObjectId>(late_.begin(), late_.end()));
      KTMFS_RETURN_IF_ERROR(Content(Pass::kLate));
    }
    return Changes();
  }

 private:
  // Every name in the backing tree is reached through beneath.h: never through a symlink.
  BackingName Backing(const std::string& rel) const { return root_.Name(rel); }
  std::string Shown(const std::string& rel) const { return t_.backing_root + "/" + rel; }
  std::string Parking(const ObjectId& id) const {
    return t_.staging_dir + "/park/p" + std::to_string(id.dev) + "." + std::to_string(id.ino);
  }
  std::string Staged(const ObjectId& id) const {
    return t_.staging_dir + "/" + StagedNameForNew(id.number);
  }

  Status Mutate(const std::string& what) { return hook_ && hooked_ ? hook_(what) : Status::Ok(); }

  // Whether `st` is the object `id` as a file a new one can take the place of: regular, with
  // one name (replacing one of several would split it in two).
  static bool Replaceable(const struct stat& st, const ObjectId& id) {
    return st.st_dev == id.dev && st.st_ino == id.ino && S_ISREG(st.st_mode) && st.st_nlink == 1;
  }

  // Whether `path` holds exactly this existing object.
  static bool Holds(const std::string& path, const ObjectId& id) { return HoldsObject(path, id); }
  static bool Holds(const BackingName& name, const ObjectId& id) {
    return name.error() == 0 && Holds(std::string(name.path()), id);
  }
  // A name whose directory cannot be reached: only its absence (an earlier run moved what
  // led there) is for the caller to judge; a symlink on the way, or anything else, is not.
  static Status Unreachable(const BackingName& name, const std::string& what) {
    if (name.error() == 0 || name.error() == ENOENT || name.error() == ENOTDIR) return Status::Ok();
    return name.ErrorStatus(what);
  }
  // An existing object's content is changed only in that object: a name that leads to
  // another one now (replaced behind the daemon's back) is refused.
  static Status CheckIdentity(int fd, const PlannedObject& o, const BackingName& name) {
    struct stat st;
    if (o.is_new() || (::fstat(fd, &st) == 0 && st.st_dev == o.id.dev && st.st_ino == o.id.ino))
      return Status::Ok();
    return IdentityError(name);
  }
  // The object `o` at `path`, opened for writing. Anything else there is refused as
  // CheckIdentity says; what is not a regular file is not even opened (a FIFO put there behind
  // the daemon's back would block the open, and recovery with it: OpenAsOwner).
  static Result<int> OpenObject(const PlannedObject& o, const BackingName& path,
                                const std::string& why) {
    const int fd = OpenAsOwner(path.path(), O_WRONLY);
    if (fd < 0 && errno == ESTALE) return IdentityError(path);
    if (fd < 0) return Status::FromErrno("open " + path.shown() + why);
    if (Status s = CheckIdentity(fd, o, path); !s.ok()) {
      ::close(fd);
      return s;
    }
    return fd;
  }
  static Status IdentityError(const BackingName& name) {
    return Status::Error(ESTALE, name.shown() + " is no longer the file the transaction changed");
  }
  // A parked, deleted file with a name besides its parking name.
  bool HasOtherNames(const PlannedObject& o) const {
    struct stat st;
    return ::lstat(Parking(o.id).c_str(), &st) == 0 && st.st_dev == o.id.dev &&
           st.st_ino == o.id.ino && !S_ISDIR(st.st_mode) && st.st_nlink > 1;
  }
  static bool Exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
  }
  static bool SameInode(const BackingName& a, const BackingName& b) {
    struct stat sa, sb;
    return ::lstat(a.path(), &sa) == 0 && ::lstat(b.path(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
  }

  Status Rename(const BackingName& from, const BackingName& to) {
    const std::string what = "rename " + from.shown() + " -> " + to.shown();
    if (from.error() != 0) return from.ErrorStatus("rename");
    if (to.error() != 0) return to.ErrorStatus("rename to");
    KTMFS_RETURN_IF_ERROR(Mutate(what));
    if (::rename(from.path(), to.path()) != 0) return Status::FromErrno(what);
    dirty_dirs_.insert(Parent(from.shown()));
    dirty_dirs_.insert(Parent(to.shown()));
    return Status::Ok();
  }

  Status Park() {
    std::vector<const PlannedObject*> order;
    for (const auto& o : plan_.objects)
      if (o.parks()) order.push_back(&o);
    if (order.empty()) return Status::Ok();
    std::string park = t_.staging_dir + "/park";
    // A transaction that staged no data (renames and removals only) has no staging directory
    // yet; parking needs one.
    if (!Exists(t_.staging_dir)) {
      KTMFS_RETURN_IF_ERROR(Mutate("mkdir " + t_.staging_dir));
      KTMFS_RETURN_IF_ERROR(MakeDirs(t_.staging_dir));
      dirty_dirs_.insert(Parent(t_.staging_dir));
    }
    if (!Exists(park)) {
      KTMFS_RETURN_IF_ERROR(Mutate("mkdir " + park));
      if (::mkdir(park.c_str(), 0700) != 0 && errno != EEXIST)
        return Status::FromErrno("mkdir " + park);
      dirty_dirs_.insert(t_.staging_dir);
    }
    // Children before their parents, so every original path still resolves when its turn comes.
    std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return PathDepth(a->original) > PathDepth(b->original);
    });
    for (const auto* o : order) {
      std::string parking = Parking(o->id);
      if (Holds(parking, o->id)) continue;  // parked by an earlier run
      BackingName original = Backing(o->original);
      KTMFS_RETURN_IF_ERROR(Unreachable(original, "park"));
      // Neither parked nor at its original name: an earlier run parked and placed it.
      if (!Holds(original, o->id)) continue;
      KTMFS_RETURN_IF_ERROR(Rename(original, BackingName::Trusted(parking)));
    }
    return Status::Ok();
  }

  Status Place() {
    std::vector<const PlannedObject*> order;
    for (const auto& o : plan_.objects)
      if (!o.deleted()) order.push_back(&o);
    std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return PathDepth(a->canonical) < PathDepth(b->canonical);
    });
    for (const auto* o : order) {
      std::string from = o->is_new() ? Staged(o->id) : Parking(o->id);
      if (!o->is_new() && !o->parks()) continue;  // it never left its original name
      // The staged or parking name disappears only by this rename, so its absence means done.
      if (!Exists(from)) continue;
      KTMFS_RETURN_IF_ERROR(Rename(BackingName::Trusted(from), Backing(o->canonical)));
    }
    // Extra names are hard links to the canonical one.
    for (const auto* o : order) {
      BackingName canonical = Backing(o->canonical);
      if (canonical.error() != 0) return canonical.ErrorStatus("link");
      for (const auto& name : o->finals) {
        if (name == o->canonical) continue;
        BackingName path = Backing(name);
        if (path.error() != 0) return path.ErrorStatus("link to");
        if (SameInode(path, canonical)) continue;
        const std::string what = "link " + canonical.shown() + " -> " + path.shown();
        KTMFS_RETURN_IF_ERROR(Mutate(what));
        if (::link(canonical.path(), path.path()) != 0) return Status::FromErrno(what);
        dirty_dirs_.insert(Parent(path.shown()));
      }
    }
    return Status::Ok();
  }

  // An existing file the transaction rewrote whole (replacement.h) gets its new content by
  // exchanging names with a file that holds it (RENAME_EXCHANGE), not by writes in place. The
  // old file then lives on under the new content's name in staging
  // until cleanup: that is how a re-run knows the exchange was done, and where it finds the old
  // content, owner, mode and xattrs again. A file with other names stays one file: it is
  // written in place, as is every file whose new content could not be made (a daemon not
  // allowed to give it its owner, a full filesystem, a filesystem without RENAME_EXCHANGE):
  // Content then does what it always did.
  //
  // Nothing is synced here: the sync step syncs the new file and its directory. A crash before
  // that can leave the exchange durable but not what was written into the new file or set on
  // it, so a re-run that finds the exchange done makes both again (RedoExchanged).
  Status ReplaceFiles() {
    for (const auto& o : plan_.objects) {
      if (o.is_new() || o.deleted() || o.finals.size() != 1) continue;
      BackingName path = Backing(o.canonical);
      if (path.error() != 0) continue;  // Content reports it
      if (!Holds(path, o.id)) {
        // Exchanged by an earlier run; otherwise replaced behind the daemon's back, which
        // Content refuses.
        for (const std::string& old : NewContentNames(t_.staging_dir, plan_.content_ops, o.id))
          if (Holds(old, o.id)) KTMFS_RETURN_IF_ERROR(RedoExchanged(o, path, old));
        continue;
      }
      const ReplaceWhen when = replace_when_ ? replace_when_(o.id) : ReplaceWhen::kIfWhole;
      if (when == ReplaceWhen::kNever) continue;
      // The old file's attributes are read through a descriptor of the object itself.
      const int old_fd = ::open(path.path(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      struct stat st;
      const bool regular = old_fd >= 0 && ::fstat(old_fd, &st) == 0 && Replaceable(st, o.id);
      Status s = regular ? Replace(o, path, FdPath(old_fd), st, when) : Status::Ok();
      if (old_fd >= 0) ::close(old_fd);
      KTMFS_RETURN_IF_ERROR(s);
    }
    return Status::Ok();
  }

  // Replaces `o` at `path` (its old file, whose stat is `st`, reachable as `old`) if the
  // transaction rewrote it whole and `when` allows. A failure to make the new content leaves it
  // to be written in place; a failure of the exchange itself stops apply, unless the filesystem
  // cannot exchange those names.
  Status Replace(const PlannedObject& o, const BackingName& path, const std::string& old,
                 const struct stat& st, ReplaceWhen when) {
    auto r = FindReplacement(plan_.content_ops, o.id, static_cast<uint64_t>(st.st_size));
    if (!r) return Status::Ok();
    if (when == ReplaceWhen::kIfWrittenOnce && r->staged_file.empty()) return Status::Ok();
    const std::string content = NewContentName(o.id, *r);
    auto early = early_.find(o.id);
    const bool data_written = early != early_.end() && early->second == content;
    if (data_written) early_.erase(early);
    KTMFS_RETURN_IF_ERROR(Mutate("make the new content of " + path.shown()));
    Status made = MakeNewContent(o, *r, content, old, st, path.shown(), data_written);
    Status exchanged = made;
    if (made.ok()) {
      const std::string what = "exchange " + content + " <-> " + path.shown();
      KTMFS_RETURN_IF_ERROR(Mutate(what));
      if (::renameat2(AT_FDCWD, content.c_str(), AT_FDCWD, path.path(), RENAME_EXCHANGE) == 0) {
        // Swapped in behind the daemon's back since it looked: put it back, and refuse.
        if (!Holds(content, o.id)) {
          ::renameat2(AT_FDCWD, content.c_str(), AT_FDCWD, path.path(), RENAME_EXCHANGE);
          return Status::Error(ESTALE, path.shown() +
                                           " is no longer the file the transaction "
                                           "changed");
        }
        Replaced(o, path);
        return Status::Ok();
      }
      exchanged = Status::FromErrno(what);
    }
    if (r->staged_file.empty()) ::unlink(content.c_str());
    // EPERM: the directory is immutable or append-only (chattr), which refuses the exchange
    // but not a write in place.
    if (made.ok() && exchanged.code() != EINVAL && exchanged.code() != EXDEV &&
        exchanged.code() != EPERM)
      return exchanged;
    return Status::Ok();  // written in place by Content
  }

  // Makes `content`, the new content of `o` (whose old file, with stat `st`, is reachable as
  // `old`): the records' data (unless `data_written`: MakeReplacementsEarly wrote it) or the
  // staged file, then the old file's owner, mode, xattrs and times, then what the transaction
  // set. Staging only: nothing a reader sees changes.
  Status MakeNewContent(const PlannedObject& o, const Replacement& r, const std::string& content,
                        const std::string& old, const struct stat& st, const std::string& shown,
                        bool data_written) {
    int fd = -1;
    Status made;
    if (data_written) {
      fd = ::open(content.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) made = Status::FromErrno("open " + content);
    } else {
      made = OpenNewContent(r, content, &fd);
      if (made.ok()) made = FillNewContent(r, fd, content);
    }
    if (made.ok()) made = CopyOwnerModeXattrs(old.c_str(), st, fd, shown);
    if (fd >= 0) ::close(fd);
    if (made.ok()) made = SetAttributes(o, BackingName::Trusted(content), /*hooked=*/false);
    return made;
  }

  // The transaction's modes, owners, times and xattrs of `o`, set on `target` in log order. A
  // replaced file gets them before the exchange, so the name never shows the new content with
  // attributes it will not keep (the visibility gate closes the old object, not the new one).
  // `hooked`: whether each change goes through the mutation hook (not for new content that is
  // not in place yet: it counts as unmade until the exchange).
  Status SetAttributes(const PlannedObject& o, const BackingName& target, bool hooked) {
    const bool was = hooked_;
    hooked_ = hooked;
    Status s = SetAttributesHooked(o, target);
    hooked_ = was;
    return s;
  }
  Status SetAttributesHooked(const PlannedObject& o, const BackingName& target) {
    for (const Op& op : plan_.content_ops) {
      if (op.object != o.id) continue;
      if (op.kind != OpKind::kSetattr && op.kind != OpKind::kSetxattr &&
          op.kind != OpKind::kRemovexattr)
        continue;
      Op attrs = op;
      attrs.set_mask &= ~kSetSize;
      KTMFS_RETURN_IF_ERROR(ContentOp(attrs, o, target)
                                .Annotate(std::string(OpKindName(op.kind)) + " " + o.original));
    }
    return Status::Ok();
  }

  // Data written early that ReplaceFiles did not exchange (the answer under the gate was to
  // write the file in place, or apply stopped before): its file goes. No run has exchanged
  // that name yet (MakeReplacementsEarly skips an object whose name no longer holds it), so it
  // holds no old file.
  void DropUnusedEarly() {
    for (const auto& [id, content] : early_)
      ::unlink(content.c_str());
    early_.clear();
  }

  void Replaced(const PlannedObject& o, const BackingName& path) {
    dirty_dirs_.insert(Parent(path.shown()));
    written_files_.insert(path.shown());
    replaced_.insert(o.id);
    replaced_names_.push_back(o.canonical);
  }

  // The exchange was done by an earlier run, which may have crashed before the new file's data
  // and attributes were durable: they are made again, from the records (a staged file's data
  // was durable before the commit) and from the old file, now at `old`.
  Status RedoExchanged(const PlannedObject& o, const BackingName& path, const std::string& old) {
    struct stat old_st;
    if (::lstat(old.c_str(), &old_st) != 0) return Status::FromErrno("stat " + old);
    auto r = FindReplacement(plan_.content_ops, o.id, static_cast<uint64_t>(old_st.st_size));
    if (!r) {
      return Status::Error(EINVAL, path.shown() + ": its old file is at " + old +
                                       ", but the transaction did not rewrite it whole");
    }
    KTMFS_RETURN_IF_ERROR(Mutate("make the new content of " + path.shown() + " again"));
    const int at = ::open(path.path(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (at < 0) return Status::FromErrno("open " + path.shown());
    struct stat st;
    const bool regular = ::fstat(at, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1;
    int fd = regular ? ::open(FdPath(at).c_str(), O_RDWR | O_CLOEXEC) : -1;
    ::close(at);
    if (!regular) return Status::Error(ESTALE, path.shown() + " is no longer the file apply made");
    if (fd < 0 && errno == EACCES) {
      // The transaction may have taken the daemon's own access away (owner_access.h).
      fd = OpenAsOwner(path.path(), O_RDWR);
      struct stat again;
      if (fd >= 0 &&
          (::fstat(fd, &again) != 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino)) {
        ::close(fd);
        return Status::Error(ESTALE, path.shown() + " is no longer the file apply made");
      }
    }
    if (fd < 0) return Status::FromErrno("open " + path.shown());
    Status s = Status::Ok();
    if (r->staged_file.empty() && ::ftruncate(fd, 0) != 0)
      s = Status::FromErrno("truncate " + path.shown());
    if (s.ok()) s = FillNewContent(*r, fd, path.shown());
    if (s.ok()) s = CopyOwnerModeXattrs(old.c_str(), old_st, fd, path.shown());
    ::close(fd);
    if (s.ok()) s = SetAttributes(o, path, /*hooked=*/true);
    KTMFS_RETURN_IF_ERROR(s);
    Replaced(o, path);
    return Status::Ok();
  }

  std::string MadeContentName(const ObjectId& id) const {
    return MadeContentPath(t_.staging_dir, id);
  }
  std::string NewContentName(const ObjectId& id, const Replacement& r) const {
    return r.staged_file.empty() ? MadeContentName(id) : t_.staging_dir + "/" + r.staged_file;
  }

  // Opens the new content: the staged file, or a file to write the records' data into (empty
  // again, if an earlier run began it).
  Status OpenNewContent(const Replacement& r, const std::string& name, int* fd) {
    if (!r.staged_file.empty()) {
      // As the owner: the transaction may have taken the daemon's own access away from it.
      *fd = OpenAsOwner(name, O_RDWR | O_CLOEXEC);
      return *fd >= 0 ? Status::Ok() : Status::FromErrno("open staged file " + name);
    }
    // A transaction whose writes all travel in their records made no staging directory.
    if (!Exists(t_.staging_dir)) KTMFS_RETURN_IF_ERROR(MakeDirs(t_.staging_dir));
    *fd = ::open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    return *fd >= 0 ? Status::Ok() : Status::FromErrno("create " + name);
  }

  // Replays the writes and size changes, which all carry their data, on the empty file `fd`;
  // nothing to do when the staged file is the content.
  static Status FillNewContent(const Replacement& r, int fd, const std::string& shown) {
    if (!r.staged_file.empty()) return Status::Ok();
    for (const Op* op : r.data_ops) {
      if (op->kind == OpKind::kSetattr) {
        if (::ftruncate(fd, static_cast<off_t>(op->size)) != 0)
          return Status::FromErrno("truncate the new content of " + shown);
        continue;
      }
      KTMFS_RETURN_IF_ERROR(
          WriteAt(fd, -1, std::as_bytes(std::span<const char>(op->data)), op->offset, shown));
    }
    return Status::Ok();
  }

  // The size a truncate at ops[i] gives, to be set after the writes that follow it instead:
  // the index of the last of them and the size then, or nullopt. Only when those writes (all of
  // the same file, one after another) cover every byte from the new size to their end, so that
  // no byte the truncate would have zeroed survives: the same bytes and size either way, and
  // each step still absolute for a re-run. A script's O_TRUNC and rewrite then overwrites the
  // blocks the file has, instead of freeing them and allocating them again (a journal
  // transaction of bitmaps on ext4, under the visibility gate). Only where the backing
  // filesystem overwrites in place (overwrite_in_place.h): one that copies on write would need
  // room for the new blocks before the old ones are freed.
  static std::optional<std::pair<size_t, uint64_t>> SizeAfterWrites(const std::vector<Op>& ops,
                                                                    size_t i) {
    const Op& cut = ops[i];
    if (cut.kind != OpKind::kSetattr || cut.set_mask != kSetSize) return std::nullopt;
    std::vector<std::pair<uint64_t, uint64_t>> written;  // [begin, end)
    size_t last = i;
    for (size_t j = i + 1; j < ops.size() && ops[j].object == cut.object; ++j) {
      const Op& w = ops[j];
      if (w.kind != OpKind::kWriteData && w.kind != OpKind::kWriteExtent) break;
      const uint64_t length = w.kind == OpKind::kWriteData ? w.data.size() : w.length;
      if (length > 0) written.emplace_back(w.offset, w.offset + length);
      last = j;
    }
    if (written.empty()) return std::nullopt;
    std::sort(written.begin(), written.end());
    uint64_t covered = cut.size;  // every byte in [cut.size, covered) is written
    uint64_t end = 0;
    for (const auto& [b, e] : written) {
      end = std::max(end, e);
      if (e <= covered) continue;
      if (b > covered) return std::nullopt;  // a gap the truncate would have left zeroed
      covered = e;
    }
    return std::make_pair(last, std::max(cut.size, end));
  }

  // The existing files whose content is written last, after the caller has let readers into
  // everything else (ApplyChanges' `let_in`): those written in place with kLateDataMin bytes or
  // more, and the others too once together they come to as much. What is written in place
  // before readers are let in then stays under kLateDataMin however many files a transaction
  // changes in part (1,000 files of 256 KiB held readers inside transactions for 300 ms).
  // Small files rewritten whole are still made under the lock, and parked files written there.
  // Each object's changes stay in log order and no other object's depend on them, so the end is
  // the same, and so is a re-run's.
  static constexpr uint64_t kLateDataMin = 1 << 20;
  std::set<ObjectId> LateObjects() const {
    std::map<ObjectId, uint64_t> bytes;
    for (const Op& op : plan_.content_ops) {
      if (op.kind == OpKind::kWriteExtent) bytes[op.object] += op.length;
      if (op.kind == OpKind::kWriteData) bytes[op.object] += op.data.size();
    }
    std::set<ObjectId> late, small;
    uint64_t small_bytes = 0;
    for (const auto& [id, n] : bytes) {
      const PlannedObject* o = plan_.Find(id);
      if (o == nullptr || o->is_new() || o->deleted() || replaced_.count(id)) continue;
      if (n >= kLateDataMin) {
        late.insert(id);
      } else {
        small.insert(id);
        small_bytes += n;
      }
    }
    if (small_bytes >= kLateDataMin) late.merge(small);
    return late;
  }

  enum class Pass { kAllButLate, kLate };
  Status Content(Pass pass) {
    const std::vector<Op>& ops = plan_.content_ops;
    // A truncate put after the writes that follow it (SizeAfterWrites): the index of the last
    // of them and the truncate, with its size.
    std::optional<std::pair<size_t, Op>> deferred;
    std::optional<bool> in_place;  // OverwritesInPlace, asked at the first truncate to defer
    for (size_t i = 0; i < ops.size(); ++i) {
      const PlannedObject* o = plan_.Find(ops[i].object);
      if (o == nullptr) continue;
      if ((late_.count(o->id) > 0) != (pass == Pass::kLate)) continue;
      BackingName path =
          o->deleted() ? BackingName::Trusted(Parking(o->id)) : Backing(o->canonical);
      if (path.error() != 0) return path.ErrorStatus("change");
      if (o->deleted()) {
        // The transaction removed every name it knew the object by. An existing file can have
        // more, which it never saw: then it lives on, with this transaction's changes, and its
        // parking name (a link to it until cleanup) is where they go. Otherwise it is gone at
        // the end: nothing to set.
        if (o->is_new() || !HasOtherNames(*o)) continue;
      }
      // Its new content came with everything the transaction set (ReplaceFiles).
      if (replaced_.count(o->id) > 0) continue;
      if (!deferred && !o->is_new()) {
        auto after = SizeAfterWrites(ops, i);
        // Where an overwrite allocates anew, the old blocks must go first to make room.
        if (after && !in_place) in_place = OverwritesInPlace(t_.backing_root);
        if (after && *in_place) {
          deferred.emplace(after->first, ops[i]);
          deferred->second.size = after->second;
          continue;
        }
      }
      Op merged;
      const Op& op = MergeExtents(ops, &i, &merged);
      KTMFS_RETURN_IF_ERROR(
          ContentOp(op, *o, path).Annotate(std::string(OpKindName(op.kind)) + " " + o->original));
      if (deferred && i >= deferred->first) {
        const Op cut = std::move(deferred->second);
        deferred.reset();
        KTMFS_RETURN_IF_ERROR(ContentOp(cut, *o, path).Annotate("truncate " + o->original));
      }
    }
    assert(!deferred && "a deferred truncate is set after its writes");
    return Status::Ok();
  }

  // The parking name of a deleted file would count as one of its links until cleanup: a file
  // with names the transaction never saw would show one link too many. So it goes now, made
  // durable first if it was written (the sync step could no longer reach it). A re-run then
  // finds neither name, and the changes already there.
  Status Unpark() {
    for (const auto& o : plan_.objects) {
      if (o.is_new() || !o.deleted()) continue;
      const std::string parking = Parking(o.id);
      struct stat st;
      if (::lstat(parking.c_str(), &st) != 0 || st.st_dev != o.id.dev || st.st_ino != o.id.ino ||
          S_ISDIR(st.st_mode)) {
        continue;  // gone already, or a directory: cleanup removes it
      }
      if (written_files_.erase(parking) > 0) {
        int fd = OpenAsOwner(parking, O_RDONLY);
        if (fd < 0) return Status::FromErrno("open " + parking);
        const bool synced = ::fsync(fd) == 0;
        Status s = synced ? Status::Ok() : Status::FromErrno("fsync " + parking);
        ::close(fd);
        KTMFS_RETURN_IF_ERROR(s);
      }
      KTMFS_RETURN_IF_ERROR(Mutate("unlink " + parking));
      if (::unlink(parking.c_str()) != 0) return Status::FromErrno("unlink " + parking);
      dirty_dirs_.insert(Parent(parking));
    }
    return Status::Ok();
  }

  // A file written in many requests has as many write-extent records, usually each starting
  // where the previous one ended. Copying their union at once gives the same bytes (every
  // extent copies the staged file's final content of its range) in fewer, bigger I/Os.
  // Returns ops[*i], or the merge of it and the records after it (then *i is the last one).
  static const Op& MergeExtents(const std::vector<Op>& ops, size_t* i, Op* merged) {
    const Op& first = ops[*i];
    if (first.kind != OpKind::kWriteExtent) return first;
    size_t j = *i;
    uint64_t end = first.offset + first.length;
    while (j + 1 < ops.size() && ops[j + 1].kind == OpKind::kWriteExtent &&
           ops[j + 1].object == first.object && ops[j + 1].staged_file == first.staged_file &&
           ops[j + 1].offset == end) {
      ++j;
      end += ops[j].length;
    }
    if (j == *i) return first;
    *merged = first;
    merged->length = end - first.offset;
    *i = j;
    return *merged;
  }

  Status ContentOp(const Op& op, const PlannedObject& o, const BackingName& path) {
    switch (op.kind) {
      case OpKind::kCreate:
      case OpKind::kMkdir:
      case OpKind::kMknod:
        // The owner first: the kernel clears set-user-ID (and group-executable set-group-ID)
        // on any chown of a non-directory, root's included, so the mode the transaction showed
        // must come after it.
        KTMFS_RETURN_IF_ERROR(Chown(path, op.uid, op.gid));
        return Chmod(path, op.mode);
      case OpKind::kSymlink:
        return Chown(path, op.uid, op.gid);
      case OpKind::kSetattr:
        return Setattr(op, o, path);
      case OpKind::kSetxattr:
        KTMFS_RETURN_IF_ERROR(Mutate("setxattr " + path.shown() + " " + op.name));
        // No XATTR_CREATE/REPLACE here: the check was made when the operation ran, and a
        // re-run must be able to set it again.
        if (op.stored_value) {
          auto value = ReadStoredValue(t_.staging_dir, *op.stored_value);
          if (!value.ok()) return value.status();
          if (SetXattrAsOwner(path.path(), op.name, *value) != 0)
            return Status::FromErrno("setxattr " + op.name);
        } else if (SetXattrAsOwner(path.path(), op.name, op.value) != 0) {
          return Status::FromErrno("setxattr " + op.name);
        }
        return Status::Ok();
      case OpKind::kRemovexattr:
        KTMFS_RETURN_IF_ERROR(Mutate("removexattr " + path.shown() + " " + op.name));
        if (RemoveXattrAsOwner(path.path(), op.name) != 0 && errno != ENODATA)
          return Status::FromErrno("removexattr " + op.name);
        return Status::Ok();
      case OpKind::kWriteExtent:
        if (o.is_new()) return Status::Ok();  // its staged file became the file itself
        return CopyExtent(op, o, path);
      case OpKind::kWriteData:
        if (o.is_new()) return Status::Ok();
        return WriteData(op, o, path);
      default:
        return Status::InvalidArgument("not a content operation");
    }
  }

  Status Chmod(const BackingName& path, uint32_t mode) {
    KTMFS_RETURN_IF_ERROR(Mutate("chmod " + path.shown()));
    // Symlinks have no mode of their own: left alone.
    if (path.ChmodNoFollow(mode & 07777) != 0) return Status::FromErrno("chmod " + path.shown());
    return Status::Ok();
  }

  Status Chown(const BackingName& path, uint32_t uid, uint32_t gid) {
    KTMFS_RETURN_IF_ERROR(Mutate("chown " + path.shown()));
    if (::lchown(path.path(), uid, gid) != 0) return Status::FromErrno("chown " + path.shown());
    return Status::Ok();
  }

  Status Setattr(const Op& op, const PlannedObject& o, const BackingName& path) {
    // Owner before mode, as for a create: the mode is what the transaction showed after both.
    if (op.set_mask & (kSetUid | kSetGid)) {
      uid_t uid = (op.set_mask & kSetUid) ? op.uid : static_cast<uid_t>(-1);
      gid_t gid = (op.set_mask & kSetGid) ? op.gid : static_cast<gid_t>(-1);
      KTMFS_RETURN_IF_ERROR(Mutate("chown " + path.shown()));
      if (::lchown(path.path(), uid, gid) != 0) return Status::FromErrno("chown " + path.shown());
    }
    if (op.set_mask & kSetMode) KTMFS_RETURN_IF_ERROR(Chmod(path, op.mode));
    // A new file's staged contents already have their final size.
    if ((op.set_mask & kSetSize) && !o.is_new()) {
      KTMFS_RETURN_IF_ERROR(Mutate("truncate " + path.shown()));
      auto fd = OpenObject(o, path, " to truncate it");
      if (!fd.ok()) return fd.status();
      Status s = Status::Ok();
      if (::ftruncate(*fd, static_cast<off_t>(op.size)) != 0)
        s = Status::FromErrno("truncate " + path.shown());
      ::close(*fd);
      KTMFS_RETURN_IF_ERROR(s);
      written_files_.insert(path.shown());
    }
    if (op.set_mask & (kSetAtime | kSetMtime)) {
      timespec ts[2];
      ts[0].tv_nsec = UTIME_OMIT;
      ts[1].tv_nsec = UTIME_OMIT;
      if (op.set_mask & kSetAtime)
        ts[0] = {op.atime_ns / 1'000'000'000, op.atime_ns % 1'000'000'000};
      if (op.set_mask & kSetMtime)
        ts[1] = {op.mtime_ns / 1'000'000'000, op.mtime_ns % 1'000'000'000};
      KTMFS_RETURN_IF_ERROR(Mutate("utimens " + path.shown()));
      if (::utimensat(AT_FDCWD, path.path(), ts, AT_SYMLINK_NOFOLLOW) != 0)
        return Status::FromErrno("utimens " + path.shown());
    }
    return Status::Ok();
  }

  Status WriteData(const Op& op, const PlannedObject& o, const BackingName& path) {
    auto opened = OpenObject(o, path, "");
    if (!opened.ok()) return opened.status();
    const int out = *opened;
    Status s = Mutate("write " + path.shown() + " @" + std::to_string(op.offset));
    size_t done = 0;
    while (s.ok() && done < op.data.size()) {
      ssize_t n = ::pwrite(out, op.data.data() + done, op.data.size() - done,
                           static_cast<off_t>(op.offset + done));
      if (n < 0) {
        s = Status::FromErrno("write " + path.shown());
        break;
      }
      done += static_cast<size_t>(n);
    }
    ::close(out);
    if (s.ok()) written_files_.insert(path.shown());
    return s;
  }

  // Copies what the staged file holds of [offset, offset+length) to the same range of the
  // final file. A later truncate may have cut the staged file short; the bytes past its end
  // are not copied, and the truncate that cut them is replayed after this. Big ranges go past
  // the page cache on both sides (see direct_io.h): the staged bytes are read this once, and
  // the final file's are made durable by the sync step anyway.
  Status CopyExtent(const Op& op, const PlannedObject& o, const BackingName& path) {
    std::string staged = t_.staging_dir + "/" + op.staged_file;
    int in = OpenAsOwner(staged, O_RDONLY | O_CLOEXEC);
    if (in < 0) return Status::FromErrno("open staged file " + staged);
    auto opened = OpenObject(o, path, "");
    if (!opened.ok()) {
      ::close(in);
      return opened.status();
    }
    const int out = *opened;
    int in_direct = -1, out_direct = -1;
    if (CopyGoesDirect(op.offset, op.length)) {
      in_direct = ReopenDirect(in, O_RDONLY | O_CLOEXEC);
      if (in_direct >= 0) out_direct = ReopenDirect(out, O_WRONLY | O_CLOEXEC);
    }
    Status s = Mutate("write " + path.shown() + " @" + std::to_string(op.offset));
    if (s.ok()) {
      s = CopyAt(in, in_direct, out, out_direct, op.offset, op.length,
                 staged + " -> " + path.shown());
    }
    for (int fd : {in, out, in_direct, out_direct})
      if (fd >= 0) ::close(fd);
    if (s.ok()) written_files_.insert(path.shown());
    return s;
  }

  AppliedChanges Changes() {
    // Every directory that may have changed, including those a previous (interrupted) run
    // changed: parents of every original and final name.
    for (const auto& o : plan_.objects) {
      // An object that keeps its one name changed no directory, in this run or an earlier one.
      if (!o.is_new() && o.finals.size() == 1 && o.finals[0] == o.original) continue;
      if (!o.original.empty()) dirty_dirs_.insert(Parent(Shown(o.original)));
      for (const auto& n : o.finals)
        dirty_dirs_.insert(Parent(Shown(n)));
    }
    AppliedChanges c;
    c.backing_root = t_.backing_root;
    c.files.assign(written_files_.begin(), written_files_.end());
    c.dirs.assign(dirty_dirs_.begin(), dirty_dirs_.end());
    c.replaced = replaced_names_;
    return c;
  }

  const ApplyTarget& t_;
  const ApplyPlan& plan_;
  const MutationHook& hook_;
  const std::function<ReplaceWhen(const ObjectId&)>& replace_when_;
  bool hooked_ = true;  // see SetAttributes
  BackingRoot root_;
  std::set<std::string> dirty_dirs_;
  std::set<std::string> written_files_;
  std::set<ObjectId> replaced_;  // files exchanged for their new content, in this run or before
  std::vector<std::string> replaced_names_;
  std::map<ObjectId, std::string> early_;  // data written before the gate closed, by object
  std::set<ObjectId> late_;                // content written after readers were let in
};

}  // namespace

Result<AppliedChanges> ApplyChanges(const ApplyTarget& target, const std::vector<Op>& ops,
                                    const MutationHook& hook,
                                    const std::function<ReplaceWhen(const ObjectId&)>& replace_when,
                                    const std::function<void()>& close_gate,
                                    const LetReadersIn& let_in) {
  auto plan = PlanApply(ops);
  if (!plan.ok()) return plan.status().Annotate("planning apply");
  Applier applier(target, *plan, hook, replace_when);
  applier.MakeReplacementsEarly();
  if (close_gate) close_gate();
  return applier.Run(let_in);
}

std::vector<std::pair<ObjectId, std::string>> ReplacementsMade(const ApplyTarget& target,
                                                               const std::vector<Op>& ops) {
  std::vector<std::pair<ObjectId, std::string>> out;
  auto plan = PlanApply(ops);
  if (!plan.ok()) return out;
  BackingRoot root(target.backing_root);
  for (const PlannedObject& o : plan->objects) {
    if (o.is_new() || o.deleted() || o.finals.size() != 1) continue;
    BackingName name = root.Name(o.canonical);
    struct stat st;
    if (name.error() != 0 || ::lstat(name.path(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_dev == o.id.dev && st.st_ino == o.id.ino) continue;
    for (const std::string& old : NewContentNames(target.staging_dir, plan->content_ops, o.id)) {
      if (!HoldsObject(old, o.id)) continue;
      out.emplace_back(ObjectId::Existing(st.st_dev, st.st_ino), o.canonical);
      break;
    }
  }
  return out;
}

Status SyncApplied(const AppliedChanges& changes) {
  // One transaction's few fsyncs: not worth a ring of their own.
  return SyncTogether(/*use_ring=*/false).Sync({&changes});
}

Status PrepareParking(const ApplyTarget& target, const ApplyPlan& plan) {
  if (std::none_of(plan.objects.begin(), plan.objects.end(),
                   [](const PlannedObject& o) { return o.parks(); }))
    return Status::Ok();
  const std::string park = target.staging_dir + "/park";
  struct stat st;
  if (::stat(park.c_str(), &st) == 0) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(MakeDirs(park));
  return SyncApplied(
      {target.backing_root, {}, {Parent(target.staging_dir), target.staging_dir}, {}});
}

Status ApplyTransaction(const ApplyTarget& target, const std::vector<Op>& ops,
                        const MutationHook& hook) {
  auto changes = ApplyChanges(target, ops, hook);
  if (!changes.ok()) return changes.status();
  return SyncApplied(*changes);
}

Status CleanupAppliedTransaction(const ApplyTarget& target) {
  // After APPLIED is durable nothing needs it: a removal lost in a crash is recovery's to redo.
  return RemoveTreeLazily(target.staging_dir);
}

}  // namespace ktmfs::fstx

#include "fs/tx/overlay.h"

#include <stdio.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <set>

namespace ktmfs::fstx {
namespace {

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

// "a/b/c" -> ("a/b", "c"); "c" -> ("", "c").
std::pair<std::string, std::string> Split(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

bool IsUnder(const std::string& path, const std::string& ancestor) {
  return path.size() > ancestor.size() && path.compare(0, ancestor.size(), ancestor) == 0 &&
         path[ancestor.size()] == '/';
}

Status OverlayError(int code, const std::string& what, const std::string& path) {
  return Status::Error(code, "overlay: " + what + " '" + path + "'");
}

}  // namespace

TxOverlay::TxOverlay(std::string backing_root) : backing_root_(std::move(backing_root)) {}

TxOverlay::Resolved TxOverlay::Resolve(const std::string& path) const {
  mu_.AssertHeld();
  if (auto it = dirs_.find(path); it != dirs_.end()) return {0, &it->second, it->second.backing};
  if (path.empty()) return {0, nullptr, std::string()};
  auto [parent, name] = Split(path);
  Resolved p = Resolve(parent);
  if (p.error != 0) return p;
  if (p.dir != nullptr) {
    if (auto e = p.dir->entries.find(name); e != p.dir->entries.end()) {
      if (e->second.removed) return {ENOENT, nullptr, std::nullopt};
      // A directory the view holds under a changed name is always in dirs_, so this is either
      // a non-directory or an object whose type could not be learnt: the backing decides.
      if (e->second.type != 0 || e->second.backing_path.empty()) {
        return {ENOTDIR, nullptr, std::nullopt};
      }
      return {0, nullptr, e->second.backing_path};
    }
  }
  if (!p.backing) return {ENOENT, nullptr, std::nullopt};
  return {0, nullptr, Join(*p.backing, name)};
}

Result<TxOverlay::Dir*> TxOverlay::Materialize(const std::string& path) {
  mu_.AssertHeld();
  Resolved r = Resolve(path);
  if (r.error != 0) return OverlayError(r.error, "no directory", path);
  if (r.dir != nullptr) return &dirs_.find(path)->second;
  return &dirs_.emplace(path, Dir{r.backing, {}}).first->second;
}

Result<TxOverlay::NameState> TxOverlay::Name(const std::string& path,
                                             const ObjectId& object) const {
  mu_.AssertHeld();
  auto [parent, name] = Split(path);
  Resolved p = Resolve(parent);
  if (p.error != 0) return OverlayError(p.error, "no directory", parent);
  NameState s;
  if (p.dir != nullptr) {
    if (auto e = p.dir->entries.find(name); e != p.dir->entries.end()) {
      s.entry = e->second;
      s.exists = !e->second.removed;
      return s;
    }
  }
  if (!p.backing) return s;  // a directory the transaction created: only its own entries
  s.unchanged = true;
  s.entry.object = object;
  s.entry.backing_path = Join(*p.backing, name);
  s.entry.backing_has_name = true;
  struct stat st;
  std::string full = backing_root_ + "/" + s.entry.backing_path;
  if (::lstat(full.c_str(), &st) == 0) s.entry.type = st.st_mode & S_IFMT;
  return s;
}

bool TxOverlay::HasLiveEntries(const std::string& dir_path) const {
  mu_.AssertHeld();
  auto it = dirs_.find(dir_path);
  if (it == dirs_.end()) return false;
  return std::any_of(it->second.entries.begin(), it->second.entries.end(),
                     [](const auto& e) { return !e.second.removed; });
}

std::map<std::string, TxOverlay::Dir> TxOverlay::TakeSubtree(const std::string& path) {
  mu_.AssertHeld();
  std::map<std::string, Dir> out;
  for (auto it = dirs_.lower_bound(path); it != dirs_.end();) {
    if (it->first != path && !IsUnder(it->first, path)) {
      // Keys sort "a", "a b", "a/x": a sibling sharing the prefix can sit between them.
      if (it->first.compare(0, path.size(), path) != 0) break;
      ++it;
      continue;
    }
    out.emplace(it->first, std::move(it->second));
    it = dirs_.erase(it);
  }
  return out;
}

void TxOverlay::PutSubtree(std::map<std::string, Dir> subtree, const std::string& from,
                           const std::string& to) {
  for (auto& [key, dir] : subtree) {
    dirs_.insert_or_assign(to + key.substr(from.size()), std::move(dir));
  }
}

Status TxOverlay::Apply(const Op& op) {
  std::lock_guard lock(mu_);
  switch (op.kind) {
    case OpKind::kCreate:
      return Create(op, S_IFREG);
    case OpKind::kMkdir:
      return Create(op, S_IFDIR);
    case OpKind::kSymlink:
      return Create(op, S_IFLNK);
    case OpKind::kMknod:
      return Create(op, (op.mode & S_IFMT) != 0 ? (op.mode & S_IFMT) : S_IFREG);
    case OpKind::kLink:
      return Link(op);
    case OpKind::kUnlink:
      return Remove(op, false);
    case OpKind::kRmdir:
      return Remove(op, true);
    case OpKind::kRename:
      return Rename(op);
    case OpKind::kSetattr: {
      AttrOverride& a = attrs_[op.object];
      if (op.set_mask & kSetMode) a.mode = (a.mode ? (*a.mode & S_IFMT) : 0) | (op.mode & 07777);
      if (op.set_mask & kSetUid) a.uid = op.uid;
      if (op.set_mask & kSetGid) a.gid = op.gid;
      if (op.set_mask & kSetSize) {
        a.size = op.size;
        a.written_end = 0;
      }
      if (op.set_mask & kSetAtime) a.atime_ns = op.atime_ns;
      if (op.set_mask & kSetMtime) a.mtime_ns = op.mtime_ns;
      return Status::Ok();
    }
    case OpKind::kSetxattr:
      return Setxattr(op);
    case OpKind::kRemovexattr:
      return Removexattr(op);
    case OpKind::kWriteExtent:
    case OpKind::kWriteData: {
      AttrOverride& a = attrs_[op.object];
      uint64_t end = op.offset + op.length;
      if (a.size) {
        a.size = std::max(*a.size, end);
      } else {
        a.written_end = std::max(a.written_end, end);
      }
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("overlay: unknown op kind");
}

Status TxOverlay::Create(const Op& op, uint32_t type) {
  auto [parent, name] = Split(op.path);
  auto d = Materialize(parent);
  if (!d.ok()) return d.status();
  auto& entries = (*d)->entries;
  bool backing_has_name = false;
  if (auto e = entries.find(name); e != entries.end()) {
    if (!e->second.removed) return OverlayError(EEXIST, "exists", op.path);
    backing_has_name = e->second.backing_has_name;
  }
  entries.insert_or_assign(name, Entry{false, op.object, type, "", backing_has_name});
  if (type == S_IFDIR) dirs_.insert_or_assign(op.path, Dir{std::nullopt, {}});
  AttrOverride& a = attrs_[op.object];
  a.mode = type | (op.mode & 07777);
  a.uid = op.uid;
  a.gid = op.gid;
  if (type == S_IFLNK) {
    a.mode = S_IFLNK | 0777;
    a.size = op.target.size();
    symlinks_[op.object] = op.target;
  }
  return Status::Ok();
}

Status TxOverlay::Link(const Op& op) {
  auto src = Name(op.path, op.object);
  if (!src.ok()) return src.status();
  if (!src->exists && !src->unchanged) return OverlayError(ENOENT, "no such entry", op.path);
  if (src->entry.type == S_IFDIR || dirs_.contains(op.path)) {
    return OverlayError(EPERM, "cannot link a directory", op.path);
  }
  auto [parent, name] = Split(op.path2);
  auto d = Materialize(parent);
  if (!d.ok()) return d.status();
  auto& entries = (*d)->entries;
  bool backing_has_name = false;
  if (auto e = entries.find(name); e != entries.end()) {
    if (!e->second.removed) return OverlayError(EEXIST, "exists", op.path2);
    backing_has_name = e->second.backing_has_name;
  }
  Entry e = src->entry;
  e.backing_has_name = backing_has_name;
  entries.insert_or_assign(name, e);
  return Status::Ok();
}

Status TxOverlay::Remove(const Op& op, bool dir) {
  auto s = Name(op.path, op.object);
  if (!s.ok()) return s.status();
  if (!s->exists && !s->unchanged) return OverlayError(ENOENT, "no such entry", op.path);
  bool is_dir = s->entry.type == S_IFDIR || dirs_.contains(op.path);
  if (dir && !is_dir && s->entry.type != 0)
    return OverlayError(ENOTDIR, "not a directory", op.path);
  if (!dir && is_dir) return OverlayError(EISDIR, "is a directory", op.path);
  if (dir && HasLiveEntries(op.path)) return OverlayError(ENOTEMPTY, "not empty", op.path);
  auto [parent, name] = Split(op.path);
  auto d = Materialize(parent);
  if (!d.ok()) return d.status();
  if (is_dir) (void)TakeSubtree(op.path);
  unlinked_.insert(s->entry.object);
  if (s->entry.backing_has_name) {
    (*d)->entries.insert_or_assign(name, Entry{.removed = true, .backing_has_name = true});
  } else {
    (*d)->entries.erase(name);
  }
  return Status::Ok();
}

Status TxOverlay::Rename(const Op& op) {
  const bool exchange = (op.flags & RENAME_EXCHANGE) != 0;
  if (op.path == op.path2) return Status::Ok();
  if (IsUnder(op.path2, op.path)) return OverlayError(EINVAL, "rename into itself", op.path2);
  auto src = Name(op.path, op.object);
  if (!src.ok()) return src.status();
  if (!src->exists && !src->unchanged) return OverlayError(ENOENT, "no such entry", op.path);
  auto dst = Name(op.path2, op.replaced);
  if (!dst.ok()) return dst.status();
  // An unchanged target name exists if the caller saw an object there.
  const bool dst_exists =
      dst->exists || (dst->unchanged && op.replaced.kind != ObjectId::Kind::kNone);
  if ((op.flags & RENAME_NOREPLACE) && dst_exists) return OverlayError(EEXIST, "exists", op.path2);
  if (exchange && !dst_exists) return OverlayError(ENOENT, "no such entry", op.path2);
  const bool src_dir = src->entry.type == S_IFDIR || dirs_.contains(op.path);
  const bool dst_dir = dst_exists && (dst->entry.type == S_IFDIR || dirs_.contains(op.path2));
  if (IsUnder(op.path, op.path2)) {
    return exchange ? OverlayError(EINVAL, "exchange with an ancestor", op.path2)
                    : OverlayError(ENOTEMPTY, "not empty", op.path2);
  }
  if (!exchange && dst_exists) {
    if (src_dir && !dst_dir && dst->entry.type != 0) {
      return OverlayError(ENOTDIR, "not a directory", op.path2);
    }
    if (!src_dir && dst_dir) return OverlayError(EISDIR, "is a directory", op.path2);
    if (dst_dir && HasLiveEntries(op.path2)) return OverlayError(ENOTEMPTY, "not empty", op.path2);
  }
  auto [sparent, sname] = Split(op.path);
  auto [dparent, dname] = Split(op.path2);
  auto sd = Materialize(sparent);
  if (!sd.ok()) return sd.status();
  auto dd = Materialize(dparent);
  if (!dd.ok()) return dd.status();

  // Directories carry their subtree of changes, and an unchanged one its backing path.
  auto src_sub = TakeSubtree(op.path);
  auto dst_sub = TakeSubtree(op.path2);
  if (src_dir && !src_sub.contains(op.path)) {
    src_sub.emplace(op.path, Dir{src->entry.backing_path, {}});
  }
  if (exchange && dst_dir && !dst_sub.contains(op.path2)) {
    dst_sub.emplace(op.path2, Dir{dst->entry.backing_path, {}});
  }
  PutSubtree(std::move(src_sub), op.path, op.path2);
  if (exchange) PutSubtree(std::move(dst_sub), op.path2, op.path);

  const bool src_flag = src->entry.backing_has_name;
  Entry moved = src->entry;
  moved.removed = false;
  // A tombstone keeps its flag: the backing directory still holds the name.
  moved.backing_has_name = dst->unchanged ? dst_exists : dst->entry.backing_has_name;
  if (exchange) {
    Entry other = dst->entry;
    other.removed = false;
    other.backing_has_name = src_flag;
    (*sd)->entries.insert_or_assign(sname, other);
    (*dd)->entries.insert_or_assign(dname, moved);
    return Status::Ok();
  }
  if (dst_exists) unlinked_.insert(dst->entry.object);
  (*dd)->entries.insert_or_assign(dname, moved);
  if (src_flag) {
    (*sd)->entries.insert_or_assign(sname, Entry{.removed = true, .backing_has_name = true});
  } else {
    (*sd)->entries.erase(sname);
  }
  return Status::Ok();
}

Status TxOverlay::Setxattr(const Op& op) {
  auto& names = xattrs_[op.object];
  auto it = names.find(op.name);
  bool known_present = it != names.end() && it->second.has_value();
  bool known_absent = (it != names.end() && !it->second.has_value()) ||
                      (it == names.end() && op.object.kind == ObjectId::Kind::kNew);
  if ((op.flags & XATTR_CREATE) && known_present)
    return OverlayError(EEXIST, "xattr exists", op.name);
  if ((op.flags & XATTR_REPLACE) && known_absent) return OverlayError(ENODATA, "no xattr", op.name);
  XattrValue value;
  if (op.stored_value) {
    value.stored = op.stored_value;
  } else {
    value.bytes = op.value;
  }
  names.insert_or_assign(op.name, std::move(value));
  return Status::Ok();
}

Status TxOverlay::Removexattr(const Op& op) {
  auto& names = xattrs_[op.object];
  auto it = names.find(op.name);
  bool is_new = op.object.kind == ObjectId::Kind::kNew;
  if ((it != names.end() && !it->second.has_value()) || (it == names.end() && is_new)) {
    return OverlayError(ENODATA, "no xattr", op.name);
  }
  if (is_new) {
    names.erase(it);
  } else {
    names.insert_or_assign(op.name, std::nullopt);
  }
  return Status::Ok();
}

Result<OverlayLookup> TxOverlay::Lookup(const std::string& dir_path,
                                        const std::string& name) const {
  std::lock_guard lock(mu_);
  Resolved r = Resolve(dir_path);
  if (r.error != 0) return OverlayError(r.error, "no directory", dir_path);
  OverlayLookup out;
  if (r.dir != nullptr) {
    if (auto e = r.dir->entries.find(name); e != r.dir->entries.end()) {
      if (e->second.removed) {
        out.kind = OverlayLookup::Kind::kRemoved;
        return out;
      }
      out.kind = OverlayLookup::Kind::kEntry;
      out.object = e->second.object;
      out.type = e->second.type;
      out.backing_path = e->second.backing_path;
      return out;
    }
  }
  if (!r.backing) {
    out.kind = OverlayLookup::Kind::kRemoved;
    return out;
  }
  out.kind = OverlayLookup::Kind::kUnchanged;
  out.backing_path = Join(*r.backing, name);
  return out;
}

Result<std::string> TxOverlay::ViewPath(const std::string& backing_path) const {
  std::lock_guard lock(mu_);
  // The deepest directory the view keeps a record of at or above the backing path: below it
  // nothing moved, so the rest of the path is the same in the view unless its first name
  // changed in that directory.
  const std::string* best_view = nullptr;
  const Dir* best = nullptr;
  size_t best_len = 0;
  for (const auto& [view, dir] : dirs_) {
    if (!dir.backing) continue;
    const std::string& b = *dir.backing;
    if (b == backing_path) return view;
    bool above = b.empty() ? !backing_path.empty() : IsUnder(backing_path, b);
    if (above && (best == nullptr || b.size() + 1 > best_len)) {
      best_view = &view;
      best = &dir;
      best_len = b.empty() ? 0 : b.size() + 1;
    }
  }
  if (backing_path.empty()) return std::string();  // the root, which nothing changed
  std::string rest = backing_path.substr(best_len);
  if (best != nullptr) {
    std::string first = rest.substr(0, rest.find('/'));
    if (best->entries.contains(first))
      return OverlayError(ENOENT, "no longer in the view", backing_path);
    return Join(*best_view, rest);
  }
  return rest;
}

Result<std::optional<std::string>> TxOverlay::BackingDir(const std::string& dir_path) const {
  std::lock_guard lock(mu_);
  Resolved r = Resolve(dir_path);
  if (r.error != 0) return OverlayError(r.error, "no directory", dir_path);
  return r.backing;
}

Result<std::vector<OverlayDirEntry>> TxOverlay::ReadDir(
    const std::string& dir_path, const std::vector<std::string>& backing_names) const {
  std::lock_guard lock(mu_);
  Resolved r = Resolve(dir_path);
  if (r.error != 0) return OverlayError(r.error, "no directory", dir_path);
  std::vector<OverlayDirEntry> out;
  auto as_entry = [](const Entry& e) {
    return OverlayLookup{OverlayLookup::Kind::kEntry, e.object, e.type, e.backing_path};
  };
  std::set<std::string> seen;
  if (r.backing) {
    for (const std::string& name : backing_names) {
      seen.insert(name);
      if (r.dir != nullptr) {
        if (auto e = r.dir->entries.find(name); e != r.dir->entries.end()) {
          if (!e->second.removed) out.push_back({name, as_entry(e->second)});
          continue;
        }
      }
      out.push_back(
          {name, OverlayLookup{OverlayLookup::Kind::kUnchanged, {}, 0, Join(*r.backing, name)}});
    }
  }
  if (r.dir != nullptr) {
    for (const auto& [name, e] : r.dir->entries) {
      if (!e.removed && !seen.contains(name)) out.push_back({name, as_entry(e)});
    }
  }
  return out;
}

namespace {

bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

}  // namespace

void ShowViewAttributes(struct stat* st, const std::optional<AttrOverride>& attrs,
                        const std::optional<ViewStamps>& stamps, bool staged_content) {
  if (const AttrOverride* a = attrs ? &*attrs : nullptr) {
    if (a->mode) st->st_mode = (st->st_mode & S_IFMT) | (*a->mode & 07777);
    if (a->uid) st->st_uid = *a->uid;
    if (a->gid) st->st_gid = *a->gid;
    if (!staged_content) {
      st->st_size = static_cast<off_t>(a->Size(static_cast<uint64_t>(st->st_size)));
      st->st_blocks = (st->st_size + 511) / 512;
    }
    if (a->atime_ns) st->st_atim = {*a->atime_ns / 1000000000, *a->atime_ns % 1000000000};
    if (a->mtime_ns && !staged_content)
      st->st_mtim = {*a->mtime_ns / 1000000000, *a->mtime_ns % 1000000000};
  }
  if (const ViewStamps* t = stamps ? &*stamps : nullptr) {
    if (t->mtime && !staged_content) st->st_mtim = *t->mtime;
    // A staged file's own ctime moves with writes the daemon does not see.
    if (t->ctime && (!staged_content || Later(*t->ctime, st->st_ctim))) st->st_ctim = *t->ctime;
    const long n = static_cast<long>(st->st_nlink) + t->nlink_delta;
    st->st_nlink = static_cast<nlink_t>(n < 0 ? 0 : n);
  }
}

std::optional<AttrOverride> TxOverlay::Attributes(const ObjectId& object) const {
  std::lock_guard lock(mu_);
  auto it = attrs_.find(object);
  if (it == attrs_.end()) return std::nullopt;
  return it->second;
}

void TxOverlay::Touch(const ObjectId& object, const timespec& now, bool data) {
  std::lock_guard lock(mu_);
  ViewStamps& t = stamps_[object];
  t.ctime = now;
  if (data) t.mtime = now;
}

void TxOverlay::SetMtime(const ObjectId& object, const timespec& mtime) {
  std::lock_guard lock(mu_);
  stamps_[object].mtime = mtime;
}

void TxOverlay::AddLinks(const ObjectId& object, int delta) {
  std::lock_guard lock(mu_);
  stamps_[object].nlink_delta += delta;
}

std::optional<ViewStamps> TxOverlay::Stamps(const ObjectId& object) const {
  std::lock_guard lock(mu_);
  auto it = stamps_.find(object);
  if (it == stamps_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> TxOverlay::Xattrs(const ObjectId& object,
                                           const std::vector<std::string>& backing_names) const {
  std::lock_guard lock(mu_);
  auto it = xattrs_.find(object);
  if (it == xattrs_.end()) return backing_names;
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& n : backing_names) {
    seen.insert(n);
    auto x = it->second.find(n);
    if (x == it->second.end() || x->second.has_value()) out.push_back(n);
  }
  for (const auto& [n, v] : it->second) {
    if (v.has_value() && !seen.contains(n)) out.push_back(n);
  }
  return out;
}

XattrLookup TxOverlay::GetXattr(const ObjectId& object, const std::string& name) const {
  std::lock_guard lock(mu_);
  XattrLookup out;
  auto it = xattrs_.find(object);
  if (it != xattrs_.end()) {
    if (auto x = it->second.find(name); x != it->second.end()) {
      if (x->second) {
        out.kind = XattrLookup::Kind::kValue;
        out.value = x->second->bytes;
        out.stored = x->second->stored;
      } else {
        out.kind = XattrLookup::Kind::kRemoved;
      }
      return out;
    }
  }
  if (object.kind == ObjectId::Kind::kNew) out.kind = XattrLookup::Kind::kRemoved;
  return out;
}

std::optional<std::string> TxOverlay::Readlink(const ObjectId& object) const {
  std::lock_guard lock(mu_);
  auto it = symlinks_.find(object);
  if (it == symlinks_.end()) return std::nullopt;
  return it->second;
}

std::vector<ObjectId> TxOverlay::TouchedObjects() const {
  std::lock_guard lock(mu_);
  std::set<ObjectId> out;
  for (const auto& [path, dir] : dirs_) {
    for (const auto& [name, e] : dir.entries) {
      if (!e.removed) out.insert(e.object);
    }
  }
  for (const auto& [id, a] : attrs_)
    out.insert(id);
  for (const auto& [id, x] : xattrs_)
    out.insert(id);
  out.insert(unlinked_.begin(), unlinked_.end());
  out.erase(ObjectId{});  // tombstones name no object
  return {out.begin(), out.end()};
}

std::vector<std::pair<std::string, std::string>> TxOverlay::ChangedBackingEntries() const {
  std::lock_guard lock(mu_);
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& [path, dir] : dirs_) {
    if (!dir.backing) continue;
    for (const auto& [name, e] : dir.entries)
      out.emplace(*dir.backing, name);
  }
  return {out.begin(), out.end()};
}

}  // namespace ktmfs::fstx

#include "fs/tx/apply_plan.h"

#include <algorithm>
#include <map>

namespace ktmfs::fstx {

std::string StagedNameForNew(uint64_t number) {
  return "n" + std::to_string(number);
}
std::string StagedNameForExisting(uint64_t dev, uint64_t ino) {
  return "e" + std::to_string(dev) + "." + std::to_string(ino);
}

size_t PathDepth(const std::string& path) {
  return static_cast<size_t>(std::count(path.begin(), path.end(), '/')) + 1;
}

bool PlannedObject::parks() const {
  if (is_new()) return false;
  return std::find(finals.begin(), finals.end(), original) == finals.end();
}

const PlannedObject* ApplyPlan::Find(const ObjectId& id) const {
  if (by_id.size() == objects.size()) {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &objects[it->second];
  }
  for (const auto& o : objects)  // a plan put together by hand
    if (o.id == id) return &o;
  return nullptr;
}

namespace {

// Replays the operations over names only. `bindings_` maps every name the transaction touched
// to what it holds now (kNone: removed); names it never touched still resolve to the backing
// directory, through the original location of the nearest bound ancestor.
class Simulator {
 public:
  Status Run(const std::vector<Op>& ops) {
    for (const Op& op : ops)
      KTMFS_RETURN_IF_ERROR(Step(op).Annotate(std::string(OpKindName(op.kind)) + " " + op.path));
    return Status::Ok();
  }

  ApplyPlan Finish() {
    ApplyPlan plan;
    // One pass over the names, not one per object: a transaction may touch tens of thousands.
    std::map<ObjectId, std::vector<std::string>> names;
    for (const auto& [path, held] : bindings_)
      names[held].push_back(path);
    for (auto& [id, obj] : objects_) {
      PlannedObject p = obj;
      if (auto it = names.find(id); it != names.end()) p.finals = std::move(it->second);
      std::stable_sort(p.finals.begin(), p.finals.end(),
                       [](const auto& a, const auto& b) { return PathDepth(a) < PathDepth(b); });
      if (!p.finals.empty()) {
        bool kept = !p.is_new() &&
                    std::find(p.finals.begin(), p.finals.end(), p.original) != p.finals.end();
        p.canonical = kept ? p.original : p.finals.front();
      }
      plan.by_id.emplace(p.id, plan.objects.size());
      plan.objects.push_back(std::move(p));
    }
    plan.content_ops = std::move(content_);
    return plan;
  }

 private:
  Status Step(const Op& op) {
    switch (op.kind) {
      case OpKind::kCreate:
      case OpKind::kMkdir:
      case OpKind::kSymlink:
      case OpKind::kMknod: {
        if (op.object.kind != ObjectId::Kind::kNew)
          return Status::InvalidArgument("a created object must be new");
        PlannedObject& p = objects_[op.object];
        p.id = op.object;
        p.created_as = op.kind;
        bindings_[op.path] = op.object;
        content_.push_back(op);  // its mode and owner are set in the content phase
        return Status::Ok();
      }
      case OpKind::kLink:
        KTMFS_RETURN_IF_ERROR(Touch(op.object, op.path));
        bindings_[op.path2] = op.object;
        return Status::Ok();
      case OpKind::kUnlink:
      case OpKind::kRmdir:
        KTMFS_RETURN_IF_ERROR(Touch(op.object, op.path));
        Unbind(op.path);
        bindings_[op.path] = ObjectId{};
        return Status::Ok();
      case OpKind::kRename:
        return Rename(op);
      case OpKind::kSetattr:
      case OpKind::kSetxattr:
      case OpKind::kRemovexattr:
      case OpKind::kWriteExtent:
      case OpKind::kWriteData:
        // Content goes to the object wherever it ends (apply finds it by its final name, or
        // parked). Through a descriptor, a change may come after the transaction removed,
        // replaced or relinked the name the file was opened by, which its record still gives:
        // a name the transaction bound, and to this object, which it knows already. A name it
        // never touched is a second pre-existing name of the object, refused as in Touch.
        if (objects_.count(op.object) == 0 || bindings_.count(op.path) == 0)
          KTMFS_RETURN_IF_ERROR(Touch(op.object, op.path));
        content_.push_back(op);
        return Status::Ok();
    }
    return Status::InvalidArgument("unknown operation kind");
  }

  Status Rename(const Op& op) {
    KTMFS_RETURN_IF_ERROR(Touch(op.object, op.path));
    if (op.replaced.kind != ObjectId::Kind::kNone)
      KTMFS_RETURN_IF_ERROR(Touch(op.replaced, op.path2));
    auto moved = TakeSubtree(op.path);
    auto target = TakeSubtree(op.path2);
    constexpr uint32_t kExchange = 1u << 1;  // RENAME_EXCHANGE
    if (op.flags & kExchange) {
      Rebind(target, op.path2, op.path);
      bindings_[op.path] = op.replaced;
    } else {
      bindings_[op.path] = ObjectId{};
    }
    Rebind(moved, op.path, op.path2);
    bindings_[op.path2] = op.object;
    return Status::Ok();
  }

  // Notes where an object is seen. An existing object's first sighting fixes its original
  // backing path; later sightings must be at a name the transaction bound to it.
  Status Touch(const ObjectId& id, const std::string& path) {
    if (id.kind == ObjectId::Kind::kNone) return Status::InvalidArgument("no object named");
    auto b = bindings_.find(path);
    if (b != bindings_.end()) {
      if (b->second == id) return Status::Ok();
      return Status::InvalidArgument("the name holds another object in this transaction");
    }
    if (id.kind == ObjectId::Kind::kNew) return Status::InvalidArgument("new object not bound");
    if (objects_.count(id))
      return Status::InvalidArgument("a second pre-existing name of one object is not supported");
    auto original = Backing(path);
    if (!original.ok()) return original.status();
    PlannedObject& p = objects_[id];
    p.id = id;
    p.original = *original;
    bindings_[path] = id;  // a pin: follows renames of its parents
    return Status::Ok();
  }

  Result<std::string> Backing(const std::string& path) const {
    for (size_t slash = path.rfind('/'); slash != std::string::npos && slash > 0;
         slash = path.rfind('/', slash - 1)) {
      auto b = bindings_.find(path.substr(0, slash));
      if (b == bindings_.end()) continue;
      if (b->second.kind != ObjectId::Kind::kExisting)
        return Status::InvalidArgument("an untouched name under a new or removed directory");
      return objects_.at(b->second).original + path.substr(slash);
    }
    return path;
  }

  // Removes and returns the bindings strictly under `dir`, keyed by the part below it.
  std::vector<std::pair<std::string, ObjectId>> TakeSubtree(const std::string& dir) {
    std::vector<std::pair<std::string, ObjectId>> out;
    std::string prefix = dir + "/";
    for (auto it = bindings_.lower_bound(prefix);
         it != bindings_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      out.emplace_back(it->first.substr(dir.size()), it->second);
      it = bindings_.erase(it);
    }
    return out;
  }
  void Rebind(const std::vector<std::pair<std::string, ObjectId>>& sub, const std::string&,
              const std::string& to) {
    for (const auto& [rest, id] : sub)
      bindings_[to + rest] = id;
  }
  void Unbind(const std::string& dir) { (void)TakeSubtree(dir); }

  std::map<std::string, ObjectId> bindings_;
  std::map<ObjectId, PlannedObject> objects_;
  std::vector<Op> content_;
};

}  // namespace

Result<ApplyPlan> PlanApply(const std::vector<Op>& ops) {
  Simulator sim;
  KTMFS_RETURN_IF_ERROR(sim.Run(ops));
  return sim.Finish();
}

std::string ParentPath(const std::string& rel) {
  const size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

namespace {

// The lengths of `path`'s ancestors and of itself, longest first ("a/b": 3, 1; "" has none).
std::vector<size_t> PrefixLengths(const std::string& path) {
  std::vector<size_t> out;
  if (path.empty()) return out;
  out.push_back(path.size());
  for (size_t i = path.size(); i-- > 0;)
    if (path[i] == '/') out.push_back(i);
  return out;
}

}  // namespace

NamesBeforeApply::NamesBeforeApply(const ApplyPlan& plan) : plan_(plan) {
  for (const PlannedObject& o : plan.objects) {
    if (!o.parks()) continue;
    leaving_.insert(o.original);
    if (!o.finals.empty()) moved_to_.emplace(o.finals.front(), &o);
  }
}

std::optional<std::string> NamesBeforeApply::Of(const std::string& path) const {
  // The deepest directory moved to an ancestor of `path` (or to `path`) carries it.
  const PlannedObject* moved = nullptr;
  std::string before = path;
  for (size_t len : PrefixLengths(path)) {
    auto it = moved_to_.find(path.substr(0, len));
    if (it == moved_to_.end()) continue;
    moved = it->second;
    before = moved->original + path.substr(len);
    break;
  }
  // Below what carries it, an object leaving its name leaves the name to the transaction.
  const size_t carried = moved == nullptr ? 0 : moved->original.size();
  for (size_t len : PrefixLengths(before)) {
    if (len <= carried) break;
    if (Vacated(before.substr(0, len))) return std::nullopt;
  }
  return before;
}

NamesBeforeApply::ChangedDirs NamesBeforeApply::DirsChanged() const {
  ChangedDirs dirs;
  for (const PlannedObject& o : plan_.objects) {
    if (o.parks()) dirs.losing.insert(ParentPath(o.original));
    for (const std::string& name : o.finals)
      if (o.is_new() || name != o.original)
        if (auto before = Of(ParentPath(name))) dirs.gaining.insert(*before);
  }
  return dirs;
}

}  // namespace ktmfs::fstx

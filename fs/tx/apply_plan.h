// What a committed transaction's operations amount to, computed from its op records alone:
// for every object it touched, where it was in the backing directory before (existing objects)
// and every name it has at the end. Apply executes this plan; because the plan depends only on
// the log, a re-run after a crash computes the same plan and can check each step by identity.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fs/tx/records.h"
#include "log/status.h"

namespace ktmfs::fstx {

// Staged names: a new object lives in the transaction's staging directory under its number
// until apply renames it into place; an existing file's transactional data under its identity.
std::string StagedNameForNew(uint64_t number);
std::string StagedNameForExisting(uint64_t dev, uint64_t ino);

struct PlannedObject {
  ObjectId id;
  OpKind created_as = OpKind::kCreate;  // new objects only
  std::string original;                 // existing objects: backing path before the transaction
  std::vector<std::string> finals;      // names at the end, shallowest first; empty: deleted
  // The name every other final name is linked from, and the one data and attributes go to.
  std::string canonical;

  bool is_new() const { return id.kind == ObjectId::Kind::kNew; }
  bool deleted() const { return finals.empty(); }
  // Existing objects that lose their original name are parked before anything is placed.
  bool parks() const;
};

struct ApplyPlan {
  std::vector<PlannedObject> objects;
  // Data and attribute operations, in log order, each naming an object of `objects`.
  std::vector<Op> content_ops;
  // Where each object is in `objects`, filled by PlanApply: apply looks objects up once per op.
  std::map<ObjectId, size_t> by_id;
  const PlannedObject* Find(const ObjectId& id) const;
};

// InvalidArgument if the operations are inconsistent (an op on a name the transaction had
// already removed) or use what this version does not support: two pre-existing names of one
// object touched by the same transaction.
Result<ApplyPlan> PlanApply(const std::vector<Op>& ops);

// Names after apply traced back to where they are before it, for what is checked before apply.
// Built once for a plan, so that a lookup walks the name's ancestors, not the plan.
class NamesBeforeApply {
 public:
  explicit NamesBeforeApply(const ApplyPlan& plan);
  // Where `path`, a name as it will be after apply, is before it: under a directory the plan
  // moves, it is still under that directory's original name. Nothing if what is at that name
  // before apply moves away or is removed (the name is the transaction's own then).
  std::optional<std::string> Of(const std::string& path) const;
  // Whether an object of the plan leaves `path`, a name before apply (moved away or removed).
  bool Vacated(const std::string& path) const { return leaving_.count(path) != 0; }

  // The directories whose entries apply changes, named as they are before it: those that lose
  // a name and those that gain one (but for those Of has nothing for).
  struct ChangedDirs {
    std::set<std::string> losing, gaining;
  };
  ChangedDirs DirsChanged() const;

 private:
  const ApplyPlan& plan_;
  std::map<std::string, const PlannedObject*> moved_to_;  // by the first final name
  std::set<std::string> leaving_;                         // original names left
};

// Number of '/' separated components: parents sort before children.
size_t PathDepth(const std::string& path);
// The directory of a name relative to a backing root: "" (the root) for a top-level name.
std::string ParentPath(const std::string& rel);

}  // namespace ktmfs::fstx

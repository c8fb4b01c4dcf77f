#include "fs/tx/fs_resource_manager.h"

#include <sys/stat.h>

#include <algorithm>
#include <cassert>
#include <optional>
#include <set>

#include "fs/tx/apply_plan.h"
#include "fs/tx/apply_targets_check.h"
#include "fs/tx/mount_id.h"
#include "fs/tx/reserve_space.h"
#include "fs/tx/served_from_staging.h"
#include "fs/tx/sync_together.h"

namespace ktmfs::fstx {

namespace {

// Whether redo of these ops reads anything from the transaction's staging.
bool NeedsStaging(const std::vector<Op>& ops) {
  for (const Op& op : ops) {
    switch (op.kind) {
      case OpKind::kCreate:
      case OpKind::kMkdir:
      case OpKind::kSymlink:
      case OpKind::kMknod:
      case OpKind::kWriteExtent:
        return true;
      default:
        break;
    }
  }
  return false;
}

// Every backing name a committed transaction's apply touches, as (directory, name): the
// original names of the existing objects and the final names of all.
// (directory, name) of a path relative to the backing root.
std::pair<std::string, std::string> SplitName(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

std::vector<std::pair<std::string, std::string>> PlanNames(const ApplyPlan& plan) {
  std::vector<std::pair<std::string, std::string>> out;
  auto add = [&](const std::string& path) { out.push_back(SplitName(path)); };
  for (const PlannedObject& o : plan.objects) {
    if (!o.is_new()) add(o.original);
    for (const auto& name : o.finals)
      add(name);
  }
  return out;
}

}  // namespace

FsResourceManager::FsResourceManager(FsRmOptions options)
    : o_(std::move(options)),
      backing_mount_(MountIdOf(o_.backing_root)),
      truncator_(o_.log, o_.stream, o_.name) {
  if (o_.sync_in_background) {
    // At mount, not at the first batch: a ring refused later (descriptors short) would leave
    // every sync of the daemon's life one after another.
    together_ = std::make_unique<SyncTogether>();
    syncs_ = std::make_unique<AppliedSyncQueue>(
        [this](const std::vector<AppliedSyncQueue::Item>& batch) { return SyncBatch(batch); },
        [this] {
          DropDurableStaging();
          // The batch's commits no longer hold the stream. A transaction's end gives the stream
          // back only as far as commits still syncing allow: after one whose sync ran behind,
          // with the log full, nothing else would (no new work gets in to end).
          MaybeTruncate();
        });
  }
}
FsResourceManager::~FsResourceManager() {
  syncs_.reset();  // syncs what is queued first
  // What waits for its APPLIED record to become durable: flush it now and drop the staging.
  bool any;
  {
    std::lock_guard l(mu_);
    any = !unclean_.empty();
  }
  if (any && o_.stream->Flush(o_.stream->last_lsn()).ok()) DropDurableStaging();
  // A clean shutdown leaves the next mount nothing of this stream to read. Not after a failed
  // or missing recovery: the stream may hold what the next mount must still see (damage that
  // stopped this one, transactions not yet redone), and truncating would skip it silently.
  if (recovered_) MaybeTruncate(/*force=*/true);
}

Status FsResourceManager::Register() {
  return o_.tm->RegisterResourceManager({o_.name, o_.id, this, o_.log});
}

ApplyTarget FsResourceManager::Target(const Guid& tx) const {
  return {o_.backing_root, o_.staging_root + "/" + tx.ToString()};
}

Result<log::Lsn> FsResourceManager::Append(const fstx::Record& r) {
  std::vector<std::byte> payload = EncodeRecord(r);
  log::Stream::AppendArgs args;
  args.type = kFsRecordType;
  args.payload = payload;
  // PREPARED, COMMITTED, APPLIED and ABORTED end work already begun: they may use the log's
  // reserve, so a full log never keeps a transaction from committing, rolling back or recovering.
  args.use_reserve = r.type != RecordType::kOp;
  auto lsn = o_.stream->Append(args);
  if (!lsn.ok())
    return lsn.status().Annotate("fs RM " + o_.name + ": transaction " + r.tx.ToString());
  return lsn;
}

Result<FsResourceManager::Tx*> FsResourceManager::Enlisted(const Guid& tx) {
  mu_.AssertHeld();
  Tx& t = txs_[tx];
  if (!t.enlisted) {
    Status s = o_.tm->Enlist(tx, o_.id);
    if (!s.ok()) return NamePinnerLocked(s);
    t.enlisted = true;
  }
  return &t;
}

// A full log is most often held by a transaction that has been open for long: say which, so its
// owner can end it (the log's message names only the stream and LSN). The stream's base cannot
// pass the first record of its oldest live transaction.
Status FsResourceManager::NamePinnerLocked(const Status& s) const {
  mu_.AssertHeld();
  if (!s.IsLogFull()) return s;
  const Guid* oldest = nullptr;
  log::Lsn first = log::kMaxLsn;
  for (const auto& [id, t] : txs_) {
    if (t.first_lsn != log::kInvalidLsn && t.first_lsn < first) first = t.first_lsn, oldest = &id;
  }
  if (oldest == nullptr) return s;
  return s.Annotate("transaction " + oldest->ToString() + " holds the log of " + o_.name +
                    " from LSN " + log::LsnToString(first) + ": commit or roll it back");
}

Status FsResourceManager::Lock(const Guid& tx, const std::vector<LockKey>& keys) {
  {
    // Enlisted before the first lock, so the end of the transaction reaches this RM and
    // releases them, even when the operation that took them is then refused.
    std::unique_lock l(mu_);
    auto t = EnlistedFreeingLog(l, tx);
    if (!t.ok()) return t.status();
  }
  for (const auto& k : keys)
    KTMFS_RETURN_IF_ERROR(locks_.Acquire(tx, k));
  return Status::Ok();
}

Status FsResourceManager::LockAt(const Guid& tx, const LockKey& key,
                                 const std::string& backing_path) {
  {
    std::unique_lock l(mu_);
    auto t = EnlistedFreeingLog(l, tx);
    if (!t.ok()) return t.status();
  }
  return locks_.Acquire(tx, key, backing_path);
}

void FsResourceManager::Identify(const Guid& tx, dev_t dev, ino_t ino, ObjectHandle handle) {
  std::lock_guard l(mu_);
  auto t = Enlisted(tx);
  if (t.ok()) (*t)->identities.emplace(std::make_pair(dev, ino), std::move(handle));
}

Result<TxStaging*> FsResourceManager::Staging(const Guid& tx) {
  std::lock_guard l(mu_);
  auto t = Enlisted(tx);
  if (!t.ok()) return t.status();
  if (!(*t)->staging) {
    auto s = TxStaging::Create(o_.staging_root, tx);
    if (!s.ok()) return s.status();
    (*t)->staging = std::move(*s);
  }
  return (*t)->staging.get();
}

TxStaging* FsResourceManager::FindStaging(const Guid& tx) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  return it == txs_.end() ? nullptr : it->second.staging.get();
}

Result<uint64_t> FsResourceManager::NewObjectNumber(const Guid& tx) {
  std::lock_guard l(mu_);
  auto t = Enlisted(tx);
  if (!t.ok()) return t.status();
  return ++(*t)->next_object;
}

Status FsResourceManager::LogOp(const Guid& tx, const Op& op, std::optional<uid_t> bounded_owner) {
  auto lsn = LogOpLocked(tx, op, bounded_owner);
  if (!lsn.ok()) return lsn.status();
  // Unflushed records wait in the log's memory: a transaction that logs much (big xattr values,
  // many small writes) flushes as it goes, so what it keeps stays on disk, not in the daemon.
  // The op is in the transaction either way: a failed flush leaves the log failed, which
  // every commit then reports; the daemon's log hears of it now.
  if (o_.log != nullptr && o_.log->end_lsn() - o_.log->flushed_lsn() > kMaxUnflushedBytes) {
    Status s = o_.stream->Flush(*lsn);
    if (!s.ok())
      Report(true, "fs RM " + o_.name + ": flushing the records of transaction " + tx.ToString() +
                       " failed: " + s.ToString());
  }
  return Status::Ok();
}

Result<FsResourceManager::Tx*> FsResourceManager::EnlistedFreeingLog(
    std::unique_lock<OwnedMutex>& l, const Guid& tx) {
  auto t = Enlisted(tx);
  if (t.ok() || !t.status().IsLogFull() || !syncs_) return t;
  // Commits whose fsyncs still run in the background hold the stream until they finish, and
  // only their end or the next gives it back: new work right after such a commit on a full log
  // would be refused for what is about to be free. Wait for them, give it back, try again.
  l.unlock();
  const bool synced = WaitSynced().ok();
  if (synced) MaybeTruncate();
  l.lock();
  return synced ? Enlisted(tx) : t;
}

Result<log::Lsn> FsResourceManager::LogOpLocked(const Guid& tx, const Op& op,
                                                std::optional<uid_t> bounded_owner) {
  std::unique_lock l(mu_);
  auto enlisted = EnlistedFreeingLog(l, tx);
  if (!enlisted.ok()) return enlisted.status();
  Tx* t = *enlisted;
  TxOverlay* ov = OverlayLocked(*t);
  fstx::Record r;
  r.type = RecordType::kOp;
  r.tx = tx;
  r.op = op;
  // The overlay checks the op against the transaction's view first: a refused op is not logged.
  // Once logged it must be in the view too, so a failed append has to be undone there; the
  // overlay cannot undo, so check and encode before applying.
  // A stored value is logged as well: recovery finds it in the record.
  assert(!op.stored_value || op.value.size() == op.stored_value->size);
  std::vector<std::byte> payload = EncodeRecord(r);
  if (bounded_owner) {
    KTMFS_RETURN_IF_ERROR(
        CheckRecordBoundsLocked(tx, t->bytes_logged, *bounded_owner, payload.size()));
  }
  KTMFS_RETURN_IF_ERROR(ov->Apply(op));
  log::Stream::AppendArgs args;
  args.type = kFsRecordType;
  args.payload = payload;
  auto lsn = o_.stream->Append(args);
  if (!lsn.ok()) {
    // The view now holds an op the log does not: the transaction can no longer commit.
    t->broken = true;
    return NamePinnerLocked(
        lsn.status().Annotate("fs RM " + o_.name + ": transaction " + tx.ToString()));
  }
  t->ops.push_back(op);
  // A stored value is in the record and in staging: memory keeps only where.
  if (op.stored_value) std::string().swap(t->ops.back().value);
  t->bytes_logged += payload.size();
  if (bounded_owner && !t->owner) t->owner = bounded_owner;
  if (t->owner) owner_logged_[*t->owner] += payload.size();
  if (t->first_lsn == log::kInvalidLsn) t->first_lsn = *lsn;
  return *lsn;
}

Status FsResourceManager::CheckRecordBoundsLocked(const Guid& tx, uint64_t logged, uid_t owner,
                                                  uint64_t bytes) const {
  mu_.AssertHeld();
  const uint64_t limit = CarryLimit();
  if (limit == 0) return Status::Ok();
  if (logged + bytes > limit) {
    return Status::Error(ENOSPC, "fs RM " + o_.name + ": transaction " + tx.ToString() +
                                     " would log " + std::to_string(logged + bytes) +
                                     " bytes, more than a sixteenth of the log (" +
                                     std::to_string(limit) +
                                     "): left open, it could no longer be carried forward and "
                                     "would fill the log for everyone; commit what it did, and "
                                     "go on in another transaction");
  }
  auto it = owner_logged_.find(owner);
  const uint64_t owners = it == owner_logged_.end() ? 0 : it->second;
  if (owners + bytes > 2 * limit) {
    return Status::Error(
        ENOSPC, "fs RM " + o_.name + ": the live transactions of uid " + std::to_string(owner) +
                    " would log " + std::to_string(owners + bytes) +
                    " bytes, more than an eighth of the log (" + std::to_string(2 * limit) +
                    "): left open, they would fill it for everyone; end some "
                    "of them (transaction " +
                    tx.ToString() + " asked)");
  }
  return Status::Ok();
}

Status FsResourceManager::RoomFor(const Guid& tx, const Op& op, uid_t owner) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  return CheckRecordBoundsLocked(tx, it == txs_.end() ? 0 : it->second.bytes_logged, owner,
                                 OpRecordSize(op));
}

uint64_t FsResourceManager::MemoryKept(const Op& op) {
  // The overlay's entry: a map node with its key and what it records (a name, attributes, an
  // xattr's name), about twice an op's fixed part.
  constexpr uint64_t kOverlayEntry = 2 * sizeof(Op);
  const uint64_t value = op.stored_value ? 0 : op.value.size();
  return sizeof(Op) + kOverlayEntry + 2 * (op.path.size() + op.name.size()) + op.path2.size() +
         op.target.size() + op.staged_file.size() + op.data.size() + 2 * value;
}

TxOverlay* FsResourceManager::Overlay(const Guid& tx) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  return it == txs_.end() ? nullptr : it->second.overlay.get();
}

TxOverlay* FsResourceManager::OverlayFor(const Guid& tx) {
  std::lock_guard l(mu_);
  return OverlayLocked(txs_[tx]);
}

TxOverlay* FsResourceManager::OverlayLocked(Tx& t) {
  mu_.AssertHeld();
  if (!t.overlay) t.overlay = std::make_unique<TxOverlay>(o_.backing_root);
  return t.overlay.get();
}

void FsResourceManager::DropUnenlisted(const Guid& tx) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  if (it == txs_.end() || it->second.enlisted) return;
  // Nothing but a view: every change that stages, locks or logs enlists first.
  assert(!it->second.staging && it->second.ops.empty() && it->second.first_lsn == log::kInvalidLsn);
  txs_.erase(it);
}

uint64_t FsResourceManager::BytesLogged(const Guid& tx) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  return it == txs_.end() ? 0 : it->second.bytes_logged;
}

bool FsResourceManager::CommitDecided(const Guid& tx) {
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  return it != txs_.end() && it->second.decided;
}

// A program started from a file after the transaction wrote it (before, its open for writing
// got ETXTBSY: txops::Open).
Status FsResourceManager::RefuseRunningPrograms(const ApplyPlan& plan) const {
  for (const Op& op : plan.content_ops) {
    const bool writes = op.kind == OpKind::kWriteExtent || op.kind == OpKind::kWriteData ||
                        (op.kind == OpKind::kSetattr && (op.set_mask & kSetSize));
    if (!writes || op.object.kind != ObjectId::Kind::kExisting) continue;
    const PlannedObject* o = plan.Find(op.object);
    if (o == nullptr || o->deleted() || !o_.executing(op.object)) continue;
    return Status::Error(ETXTBSY, o_.backing_root + "/" + o->canonical +
                                      ": a program runs from it, and the transaction writes it");
  }
  return Status::Ok();
}

Status FsResourceManager::Prepare(const Guid& tx, log::Lsn* lsn) {
  // Commits applied before must be synced, their APPLIED records appended, before this one can
  // change the backing directory: a redo of theirs must never find this one's changes (a
  // directory it moved, say) half there. The records need not be durable yet: this
  // transaction changes nothing before its own decision is durable, and the flush that makes it
  // so covers every record appended before.
  KTMFS_RETURN_IF_ERROR(WaitSynced());
  Tx* found;
  {
    std::lock_guard l(mu_);
    found = &txs_[tx];
    if (found->broken) {
      return Status::IoError("fs RM " + o_.name + ": transaction " + tx.ToString() +
                             " lost an operation to a failed log append; it can only roll back");
    }
  }
  // The rest runs without mu_: it checks, reserves and syncs for seconds when the transaction is
  // big, and every other transaction's operations take mu_. This one's do not run any more (its
  // end holds it), so nothing else changes its ops or staging, and a map's entries stay put.
  Tx& t = *found;
  // What apply's plan refuses (two pre-existing names of one object, say) must refuse the
  // commit now: once the decision is durable, apply may no longer fail for it.
  // So must an object an administrator made immutable or append-only, and a backing filesystem
  // too full to hold what apply will do: its parking directory, the xattrs (can it hold them at
  // all?), new names, and last (what it allocates in users' files outlives a refusal) the data
  // it writes into existing files.
  auto plan = PlanApply(t.ops);
  Status applicable =
      plan.ok() ? CheckApplyTargets(o_.backing_root, *plan, t.identities) : plan.status();
  if (applicable.ok() && o_.executing) applicable = RefuseRunningPrograms(*plan);
  if (applicable.ok()) applicable = PrepareParking(Target(tx), *plan);
  if (applicable.ok()) applicable = ProbeXattrs(o_.backing_root, Target(tx).staging_dir, *plan);
  // The metadata's blocks stay the daemon's: a user out of space may still rename and remove,
  // as natively, where the placeholder's worst case (a block per directory gaining a name)
  // would refuse it.
  if (applicable.ok())
    applicable = ReserveMetadataSpace(o_.backing_root, Target(tx).staging_dir, *plan);
  const std::optional<WriterIds> owner = o_.space_owner ? o_.space_owner(tx) : std::nullopt;
  if (applicable.ok()) applicable = ReserveApplySpace(o_.backing_root, *plan, owner);
  if (!applicable.ok()) {
    return applicable.Annotate("fs RM " + o_.name + ": transaction " + tx.ToString() +
                               " cannot be applied");
  }
  if (prepare_hook_) prepare_hook_(tx);
  fstx::Record r;
  r.type = RecordType::kPrepared;
  r.tx = tx;
  r.op_count = t.ops.size();
  if (t.staging) {
    // Staged data must be durable before the record that lets recovery rely on it, unless no
    // op needs it (small writes carry their data in their records).
    if (NeedsStaging(t.ops)) KTMFS_RETURN_IF_ERROR(t.staging->Sync());
    r.staged_files = t.staging->file_names();
  }
  std::set<ObjectId> objects;
  for (const Op& op : t.ops)
    objects.insert(op.object);
  r.objects.assign(objects.begin(), objects.end());
  auto appended = Append(r);
  if (!appended.ok()) return appended.status();
  *lsn = *appended;
  return Status::Ok();
}

Status FsResourceManager::CommitAndApply(const Guid& tx, const std::vector<Op>& ops,
                                         bool log_committed, log::Lsn* committed_lsn) {
  if (log_committed) {
    fstx::Record r;
    r.type = RecordType::kCommitted;
    r.tx = tx;
    auto lsn = Append(r);
    if (!lsn.ok()) return lsn.status();
    if (committed_lsn) *committed_lsn = *lsn;
  }
  bool applied = false;
  return ApplyAndFinish(tx, ops, &applied);
}

std::vector<VisibilityGate::Key> FsResourceManager::GateKeys(const Guid& tx) const {
  std::vector<VisibilityGate::Key> keys;
  for (const LockKey& k : locks_.HeldBy(tx)) {
    if (const auto* o = std::get_if<ObjectKey>(&k)) {
      keys.push_back({o->dev, o->ino});
    } else {
      const auto& e = std::get<EntryKey>(k);
      keys.push_back({e.dir_dev, e.dir_ino});
    }
  }
  return keys;
}

VisibilityGate::Closed::ServedObjects FsResourceManager::ServedWhileApplied(
    const Guid& tx, const std::vector<ObjectId>& objects) {
  VisibilityGate::Closed::ServedObjects served;
  std::lock_guard l(mu_);
  auto it = txs_.find(tx);
  if (it == txs_.end() || !it->second.staging || !it->second.overlay) return served;
  for (const ObjectId& id : objects) {
    const StagedFile* f = it->second.staging->Find(StagedNameForExisting(id.dev, id.ino));
    if (f == nullptr) continue;
    auto object =
        ServedFromStaging::Make(it->second.overlay.get(), it->second.staging.get(), f, id);
    if (!object.ok()) {
      Report(false, "transaction " + tx.ToString() +
                        ": readers of a file it changed wait for "
                        "its apply instead of reading staging (" +
                        object.status().ToString() + ")");
      continue;
    }
    served.emplace(VisibilityGate::Key{id.dev, id.ino}, std::move(*object));
  }
  return served;
}

Status FsResourceManager::ApplyAndFinish(const Guid& tx, const std::vector<Op>& ops, bool* applied,
                                         bool background) {
  std::optional<AppliedChanges> changes;
  Status s;
  {
    std::unique_lock<std::shared_mutex> visible;
    VisibilityGate::Closed closed;
    // Closed only once apply has made, in staging, what it can beforehand (ApplyChanges). The
    // lock first: a reader inside a transaction holds it shared and may then wait at the gate,
    // which is closed only while apply holds the lock.
    auto close_gate = [&] {
      if (o_.visibility) visible = std::unique_lock(*o_.visibility);
      if (o_.gate) closed = o_.gate->Close(GateKeys(tx));
    };
    // Once only the late files' data (Applier::LateObjects) is left to write in place, everything
    // else opens: readers inside transactions, which wait for the lock, wait no longer. Readers of
    // those files who can are served them from staging (ServedFromStaging), and the rest wait at
    // the gate. The transaction keeps its locks meanwhile, so nothing else changes those files or
    // moves a directory above them; its staging stays until apply is done.
    VisibilityGate::Closed late;
    VisibilityGate::Closed::ServedObjects served;
    auto let_in = [&](const std::vector<ObjectId>& still_changing) {
      std::vector<VisibilityGate::Key> keys;
      for (const ObjectId& id : still_changing)
        keys.push_back({id.dev, id.ino});
      served = ServedWhileApplied(tx, still_changing);
      late = closed.Keep(keys, served);
      closed.Open();
      if (visible.owns_lock()) visible.unlock();
      // Only files served: a reader of one that is not waits for the copy, maybe with the
      // kernel's pages locked, which dropping them would wait for.
      std::vector<ObjectId> served_ids;
      for (const ObjectId& id : still_changing)
        if (served.count({id.dev, id.ino}) != 0) served_ids.push_back(id);
      if (o_.on_let_in && !served_ids.empty()) o_.on_let_in(tx, served_ids);
    };
    std::function<ReplaceWhen(const ObjectId&)> replace_when;
    if (o_.replace_when)
      replace_when = [this, &tx](const ObjectId& id) { return o_.replace_when(tx, id); };
    auto r = ApplyChanges(Target(tx), ops, apply_hook_, replace_when, close_gate, let_in);
    if (r.ok()) changes = std::move(*r);
    s = r.status();
    // Before `late` lets its readers read the files themselves. The data is in place whatever
    // this meets, so it only reports.
    for (const auto& [key, object] : served) {
      if (Status kept = s.ok() ? object->KeepWhatWasServed() : Status::Ok(); !kept.ok())
        Report(false, "transaction " + tx.ToString() +
                          ": a file served from staging during its apply keeps the time apply " +
                          "gave it, not the one its readers were shown (" + kept.ToString() + ")");
    }
  }
  if (changes && !changes->replaced.empty()) {
    std::lock_guard l(mu_);
    if (auto it = txs_.find(tx); it != txs_.end())
      for (const std::string& name : changes->replaced)
        it->second.replaced.push_back(SplitName(name));
  }
  // Unannotated: every failure goes to KeepPending, whose report names the transaction.
  KTMFS_RETURN_IF_ERROR(s);
  if (background) {
    log::Lsn first;
    {
      std::lock_guard l(mu_);
      auto it = txs_.find(tx);
      first = it == txs_.end() ? log::kInvalidLsn : it->second.first_lsn;
    }
    syncs_->Push({tx, first, std::move(*changes)});
    *applied = true;
    return Status::Ok();
  }
  // Syncing changes nothing a reader sees, so readers and other commits go on meanwhile; this
  // transaction keeps its locks until the sync is done, so nothing lands on its objects first.
  KTMFS_RETURN_IF_ERROR(SyncApplied(*changes));
  *applied = true;
  KTMFS_RETURN_IF_ERROR(Applied(tx));
  NoteUnflushedApplied();
  DropDurableStaging();
  return Status::Ok();
}

Status FsResourceManager::Abort(const Guid& tx) {
  // Staging of a rolled-back transaction left behind by a crash is recovery's to remove. A
  // rolled-back transaction's staging is never read again, even by recovery.
  KTMFS_RETURN_IF_ERROR(DiscardTree(Target(tx).staging_dir));
  fstx::Record r;
  r.type = RecordType::kAborted;
  r.tx = tx;
  // Not flushed: without it, recovery presumes abort anyway.
  auto lsn = Append(r);
  return lsn.ok() ? Status::Ok() : lsn.status();
}

void FsResourceManager::Forget(const Guid& tx, bool release_locks, bool committed) {
  std::unique_ptr<TxOverlay> overlay;
  std::vector<std::pair<std::string, std::string>> replaced;
  {
    std::lock_guard l(mu_);
    auto it = txs_.find(tx);
    if (it != txs_.end()) {
      overlay = std::move(it->second.overlay);
      replaced = std::move(it->second.replaced);
      if (const auto& owner = it->second.owner) {
        auto o = owner_logged_.find(*owner);
        assert(o != owner_logged_.end() && o->second >= it->second.bytes_logged);
        o->second -= it->second.bytes_logged;
        if (o->second == 0) owner_logged_.erase(o);
      }
    }
    txs_.erase(tx);
  }
  if (overlay && o_.on_end) o_.on_end(tx, committed, *overlay, replaced);
  if (release_locks) {
    locks_.ReleaseAll(tx);
  } else if (!committed) {
    std::lock_guard l(mu_);
    keep_log_ = true;
  }
  MaybeTruncate();
  if (o_.after_end) o_.after_end();
}

void FsResourceManager::Report(bool error, const std::string& message) const {
  if (o_.report) o_.report(error, message);
}

void FsResourceManager::KeepPending(const Guid& tx, std::vector<Op> ops, log::Lsn first_lsn,
                                    const Status& why, bool owes_commit_reply) {
  LockReplacements(tx, ops);
  auto say = [&] {
    Report(true, "fs RM " + o_.name + ": transaction " + tx.ToString() +
                     " is committed, but applying it failed: " + why.message() +
                     "; its apply stays pending (its files stay locked) and is retried, and at "
                     "every mount");
  };
  std::lock_guard l(mu_);
  for (auto& p : pending_) {
    if (p.info.tx == tx) {
      // A retry every few seconds that fails the same way is not news.
      if (p.info.error != why.message()) say();
      p.info.error = why.message();
      p.info.attempts++;
      return;
    }
  }
  say();
  pending_.push_back({{tx, why.message(), 1}, std::move(ops), first_lsn, owes_commit_reply});
}

std::vector<FsResourceManager::PendingApply> FsResourceManager::PendingApplies() {
  std::lock_guard l(mu_);
  std::vector<PendingApply> out;
  for (const auto& p : pending_)
    out.push_back(p.info);
  return out;
}

size_t FsResourceManager::RetryPendingApplies() {
  std::vector<Pending> todo;
  {
    std::lock_guard l(mu_);
    todo = pending_;
  }
  for (const Pending& p : todo) {
    bool applied = false;
    Status s = ApplyAndFinish(p.info.tx, p.ops, &applied);
    if (!applied) {
      KeepPending(p.info.tx, p.ops, p.first_lsn, s);
      continue;
    }
    Report(false, "fs RM " + o_.name + ": the pending apply of transaction " +
                      p.info.tx.ToString() + " is done");
    {
      std::lock_guard l(mu_);
      std::erase_if(pending_, [&](const Pending& q) { return q.info.tx == p.info.tx; });
    }
    locks_.ReleaseAll(p.info.tx);
    if (p.owes_commit_reply) (void)o_.tm->CommitComplete(p.info.tx, o_.id, log::kInvalidLsn);
    if (o_.on_late_apply) {
      auto plan = PlanApply(p.ops);
      if (!plan.ok()) continue;
      std::vector<ObjectId> objects;
      for (const PlannedObject& o : plan->objects)
        if (!o.is_new()) objects.push_back(o.id);
      o_.on_late_apply(p.info.tx, objects, PlanNames(*plan));
    }
  }
  MaybeTruncate();
  std::lock_guard l(mu_);
  return pending_.size();
}

void FsResourceManager::LockReplacements(const Guid& tx, const std::vector<Op>& ops) {
  for (const auto& [id, name] : ReplacementsMade(Target(tx), ops))
    (void)locks_.Acquire(tx, ObjectKey{id.dev, id.ino}, name);
}

void FsResourceManager::LockPending(const Guid& tx, const std::vector<Op>& ops) {
  LockReplacements(tx, ops);
  auto plan = PlanApply(ops);
  if (!plan.ok()) return;
  for (const PlannedObject& o : plan->objects)
    if (!o.is_new()) (void)locks_.Acquire(tx, ObjectKey{o.id.dev, o.id.ino}, o.original);
  for (const auto& [dir, name] : PlanNames(*plan)) {
    struct stat st;
    if (::stat((dir.empty() ? o_.backing_root : o_.backing_root + "/" + dir).c_str(), &st) != 0)
      continue;
    (void)locks_.Acquire(tx, EntryKey{st.st_dev, st.st_ino, name},
                         dir.empty() ? name : dir + "/" + name);
  }
}

void FsResourceManager::Notify(const tm::Notification& n) {
  const Guid& tx = n.transaction;
  std::vector<Op> ops;
  log::Lsn first_lsn = log::kInvalidLsn;
  {
    std::lock_guard l(mu_);
    auto it = txs_.find(tx);
    if (it != txs_.end()) {
      // Every notification ends the transaction's work: its ops and first record stay as they
      // are now, and PREPARED, COMMITTED or ABORTED may follow them (CarryForwardIdle).
      it->second.ending = true;
      ops = it->second.ops;
      first_lsn = it->second.first_lsn;
    }
  }
  switch (n.kind) {
    case tm::NotificationKind::kPrepare: {
      log::Lsn lsn = log::kInvalidLsn;
      Status s = Prepare(tx, &lsn);
      (void)o_.tm->PrepareComplete(tx, o_.id, s, lsn);
      return;
    }
    case tm::NotificationKind::kSinglePhaseCommit: {
      // Our COMMITTED record is the decision: staging must be durable first, then the record.
      log::Lsn lsn = log::kInvalidLsn;
      Status s = Prepare(tx, &lsn);
      fstx::Record r;
      r.type = RecordType::kCommitted;
      r.tx = tx;
      Result<log::Lsn> committed = s.ok() ? Append(r) : Result<log::Lsn>(s);
      if (committed.ok())
        s = o_.stream->Flush(*committed);
      else
        s = committed.status();
      if (!committed.ok()) {
        (void)Abort(tx);
        Forget(tx, true, false);
        (void)o_.tm->SinglePhaseCommitComplete(tx, o_.id, s);
        return;
      }
      if (!s.ok()) {
        // The flush failed, yet COMMITTED may have reached the disk: the outcome is in doubt
        // until recovery reads the log. Keep staging and locks for it; say exactly that.
        Forget(tx, false, false);
        (void)o_.tm->SinglePhaseCommitComplete(
            tx, o_.id,
            Status::Error(tm::kOutcomeUnknownErrno,
                          "fs RM " + o_.name + ": the outcome of transaction " + tx.ToString() +
                              " is unknown until the next mount recovers the log: its COMMITTED "
                              "record at " +
                              log::LsnToString(*committed) +
                              " could not be made durable: " + s.message()));
        return;
      }
      // Committed, whatever apply does now: a failure leaves it pending (the redo is in the
      // log), and the commit is acknowledged as what it is.
      {
        std::lock_guard l(mu_);
        if (auto it = txs_.find(tx); it != txs_.end()) it->second.decided = true;
      }
      bool applied = false;
      Status a = ApplyAndFinish(tx, ops, &applied, o_.sync_in_background);
      if (!applied) KeepPending(tx, ops, first_lsn, a);
      Forget(tx, applied, true);
      (void)o_.tm->SinglePhaseCommitComplete(tx, o_.id, Status::Ok());
      return;
    }
    case tm::NotificationKind::kCommit: {
      fstx::Record r;
      r.type = RecordType::kCommitted;
      r.tx = tx;
      // The decision is durable at the TM, so apply runs even if this append fails (a broken
      // or full log): a fully applied, fsynced backing directory is itself the proof, and a
      // later presumed abort then only drops the staging that apply no longer needs.
      Result<log::Lsn> committed = Append(r);
      bool applied = false;
      Status s = ApplyAndFinish(tx, ops, &applied);
      if (!applied) KeepPending(tx, ops, first_lsn, s, !committed.ok());
      Forget(tx, applied, true);
      if (committed.ok()) {
        (void)o_.tm->CommitComplete(tx, o_.id, *committed);
      } else if (applied) {
        (void)o_.tm->CommitComplete(tx, o_.id, log::kInvalidLsn);
      }
      // Otherwise neither the log nor the backing directory holds the commit: no reply, so
      // the TM keeps the decision and hands it to this RM's recovery.
      (void)s;
      return;
    }
    case tm::NotificationKind::kRollback: {
      (void)Abort(tx);
      Forget(tx, true, false);
      (void)o_.tm->RollbackComplete(tx, o_.id);
      return;
    }
  }
}

}  // namespace ktmfs::fstx

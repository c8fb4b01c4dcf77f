// Starting the transaction service: the log (one, or one per source), the transaction manager
// and a resource manager per source, each recovered before the mount appears, with a report of
// what recovery did and how long each step took.
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "fs/mount/daemon_log.h"
#include "fs/service/tx_service.h"
#include "fs/tx/mount_id.h"
#include "fs/tx/staging.h"
#include "log/io.h"
#include "log/sync_fault_storage.h"

namespace ktmfs::fs {
namespace {

// An RM's id must be the same at every mount (the TM's records name RMs by it), so it is
// derived from the source's name, which the mount command fixes.
Guid RmIdFor(const std::string& name) {
  Guid g;
  uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
  for (unsigned char c : "ktmfs resource manager " + name) {
    h1 = (h1 ^ c) * 1099511628211ull;
    h2 = (h2 ^ c) * 0x100000001b3ull + 0x7f4a7c15;
  }
  std::memcpy(g.bytes.data(), &h1, 8);
  std::memcpy(g.bytes.data() + 8, &h2, 8);
  g.bytes[6] = (g.bytes[6] & 0x0f) | 0x80;  // a name-based GUID (version 8, RFC 9562)
  g.bytes[8] = (g.bytes[8] & 0x3f) | 0x80;
  return g;
}

std::string SourceLabel(const Source& s) {
  return s.name.empty() ? std::string("root") : s.name;
}

// "0.25 s": how long a step of recovery took, for its report.
std::string Seconds(std::chrono::steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", std::chrono::duration<double>(d).count());
  return buf;
}

// The shape of a log the daemon creates. A small log (-o log_size=) gets smaller containers, so
// that it still has enough of them for the ring to free space a container at a time.
log::LogOptions DaemonLogOptions(uint64_t log_size) {
  log::LogOptions lo;
  // An eighth of the log is kept for the records that end transactions (and for recovery): new
  // work gets ENOSPC first, so commits, rollbacks and the next mount always have room.
  lo.reserve_percent = 12;
  if (log_size != 0) {
    uint64_t container = std::clamp<uint64_t>(log_size / 16, 256 << 10, 4 << 20);
    container -= container % lo.block_size;
    lo.container_size = container;
    lo.max_containers = uint32_t(std::max<uint64_t>(log_size / container, 4));
  }
  return lo;
}

// KTMFS_FAULT_APPLY_PAUSE: lets a test look at the mount while an apply is under way. A file
// that holds text pauses only before a change whose description contains it (its first line),
// such as the first data apply writes into a big file in place, after letting readers in. The
// pause lasts while the file exists and still names that change: a test moves on to a later
// change by putting another text in its place (rename(2), so that it never goes missing).
// The file's first line; nullopt once it is gone.
std::optional<std::string> PauseText(const std::string& file) {
  std::FILE* f = std::fopen(file.c_str(), "re");
  if (f == nullptr) return std::nullopt;
  std::string only;
  char line[256];
  if (std::fgets(line, sizeof line, f) != nullptr) only = line;
  std::fclose(f);
  if (!only.empty() && only.back() == '\n') only.pop_back();
  return only;
}

fstx::MutationHook PauseApplyWhile(const std::string& file) {
  return [file](const std::string& what) -> Status {
    auto pauses = [&] {
      const std::optional<std::string> only = PauseText(file);
      return only && (only->empty() || what.find(*only) != std::string::npos);
    };
    if (!pauses()) return Status::Ok();
    DaemonLog(LogLevel::kWarning,
              "fault injection: apply paused before \"" + what + "\" while " + file + " exists");
    while (pauses())
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    DaemonLog(LogLevel::kWarning, "fault injection: apply resumed");
    return Status::Ok();
  };
}

}  // namespace

Result<std::unique_ptr<TxService>> TxService::Start(const Options& options, const Layout& layout) {
  std::unique_ptr<TxService> s(new TxService());
  s->quota_ = std::make_unique<UserQuota>(options.user_caps);
  KTMFS_RETURN_IF_ERROR(s->Open(options, layout));
  s->opened_ = true;
  s->StartForkEvents();
  s->reaper_ = std::thread([p = s.get()] { p->Reap(); });
  return s;
}

void TxService::StartForkEvents() {
  auto connector = ProcConnector::Open();
  if (!connector.ok()) {
    // Said once: tree scope is weaker from now on (ktmfs-tx(7) says how).
    DaemonLog(LogLevel::kWarning, "no process events (" + connector.status().ToString() +
                                      "): tree-scoped transactions follow the current parents "
                                      "only, so a process reparented away from the bound one "
                                      "leaves them");
    return;
  }
  auto forks = std::make_unique<ForkTracker>(&proc_, connector->get());
  if (Status s = forks->StartThread(); !s.ok()) {
    DaemonLog(LogLevel::kWarning,
              s.ToString() + ": tree-scoped transactions follow the current parents only");
    return;
  }
  proc_events_ = std::move(*connector);
  forks_ = std::move(forks);
  bindings_.UseForkEvents(forks_.get());
}

Status TxService::Open(const Options& options, const Layout& layout) {
  const std::string& state = layout.state_dir();
  auto open_log = [&](const std::string& dir) -> Result<log::Log*> {
    log::UringStorageOptions so;
    so.direct_io = true;  // see log/io.h; measured with tests/bench/log_bench
    auto storage = log::OpenUringStorage(dir, so);
    if (!storage.ok()) return storage.status().Annotate("log " + dir);
    if (!options.fault_log_sync.empty()) {
      DaemonLog(LogLevel::kWarning, "fault injection armed for log " + dir + ": while " +
                                        options.fault_log_sync +
                                        " exists, the next durable log write fails with EIO "
                                        "after it is done");
      *storage =
          std::make_unique<log::SyncFaultStorage>(std::move(*storage), options.fault_log_sync);
    }
    auto lg = log::Log::Open(storage->get(), DaemonLogOptions(options.log_size), true);
    if (!lg.ok()) return lg.status().Annotate("log " + dir);
    storages_.push_back(std::move(*storage));
    logs_.push_back(std::move(*lg));
    return logs_.back().get();
  };
  auto main_log = open_log(state + "/log");
  if (!main_log.ok()) return main_log.status();
  tm::TmOptions tmo;
  tmo.timeout_thread = false;  // the reaper ends timed-out transactions itself (see End)
  // The TM's stream holds the log from its previous restart area: keep that a small part of it.
  const log::LogGeometry g = (*main_log)->geometry();
  tmo.restart_every_log_bytes =
      std::min<uint64_t>(tmo.restart_every_log_bytes, g.container_size * g.max_containers / 16);
  auto tm = tm::TransactionManager::Open(*main_log, tmo);
  if (!tm.ok()) return tm.status().Annotate("transaction manager");
  tm_ = std::move(*tm);
  const auto recovery_began = std::chrono::steady_clock::now();
  // Recovery errors name the log's directory: what ktmfs-log is pointed at.
  KTMFS_RETURN_IF_ERROR(
      tm_->Recover().Annotate("transaction manager recovery (log " + state + "/log)"));
  // Who began what recovery finds, for its report: the TM logged owner and description.
  std::map<Guid, tm::TransactionInfo> in_doubt;
  for (auto& t : tm_->List())
    if (t.recovered) in_doubt.emplace(t.id, std::move(t));
  const uint64_t mount_ns = RealtimeNs();
  // An ending recovery settled, remembered (txstat --recent) and logged once, whichever of
  // its resource managers settled it first.
  auto settled = [&](const Guid& tx, bool committed, const std::string& label, const char* what) {
    Ending e;
    e.id = tx;
    e.outcome = committed ? Ending::Outcome::kCommitted : Ending::Outcome::kRolledBack;
    if (!committed) e.reason = "it was unfinished when the last daemon stopped";
    e.recovered = true;
    e.end_time_ns = mount_ns;
    e.when = std::chrono::steady_clock::now();
    std::string who = "owner unknown";
    e.owner = static_cast<uid_t>(-1);  // KTMFS_UID_UNKNOWN until the TM's records say
    if (auto it = in_doubt.find(tx); it != in_doubt.end()) {
      e.owner = it->second.owner;
      e.name = it->second.description;
      who = "uid " + std::to_string(e.owner);
      if (!e.name.empty()) who += ", " + QuotedForLog(e.name);
    }
    if (endings_.Knows(tx)) return;
    DaemonLog(LogLevel::kNotice,
              "recovery of " + label + ": transaction " + tx.ToString() + " (" + who + ") " + what);
    endings_.Remember(std::move(e));
  };
  // The restart area lists the transactions in doubt, so the log before it is no longer the
  // TM's: the RMs' recovery finds room even if the last session filled the log.
  KTMFS_RETURN_IF_ERROR(tm_->Checkpoint().Annotate("transaction manager restart area"));

  const auto& sources = layout.sources();
  struct stat state_st;
  if (stat(state.c_str(), &state_st) != 0)
    return Status::FromErrno(errno, "state directory " + state);
  for (size_t i = 0; i < sources.size(); i++) {
    const std::string label = SourceLabel(sources[i]);
    struct stat src_st;
    if (stat(sources[i].path.c_str(), &src_st) != 0)
      return Status::FromErrno(errno, "source " + sources[i].path);
    // With dedicated logs each source keeps its log and staging in its own .ktmfs; otherwise
    // both live in the state directory.
    const bool dedicated = options.log_mode == LogMode::kDedicated;
    const std::string own_state = dedicated ? sources[i].path + "/.ktmfs" : state;
    // Apply renames staged files into place: staging must be on the backing filesystem.
    if (!dedicated && src_st.st_dev != state_st.st_dev) {
      return Status::InvalidArgument("source " + sources[i].path + " is on another filesystem " +
                                     "than the state directory " + state +
                                     "; transactions need both on one (use -o state= or "
                                     "-o log=dedicated)");
    }
    log::Log* lg = *main_log;
    const std::string log_dir = dedicated ? own_state + "/log." + label : state + "/log";
    if (dedicated) {
      auto own = open_log(log_dir);
      if (!own.ok()) return own.status();
      lg = *own;
    }
    // Made now if missing: said to the RM, whose recovery must not call anything it took
    // part in applied without its records.
    const bool stream_is_new = !lg->OpenStream("fs." + label, /*create=*/false).ok();
    auto stream = lg->OpenStream("fs." + label);
    if (!stream.ok()) return stream.status().Annotate("resource manager " + label);
    fstx::FsRmOptions o;
    o.name = label;
    o.id = RmIdFor(label);
    o.backing_root = sources[i].path;
    o.staging_root = own_state + "/staging/" + label;
    o.tm = tm_.get();
    o.log = lg;
    o.stream = *stream;
    o.stream_is_new = stream_is_new;
    o.visibility = &visibility_;
    o.gate = &gate_;
    o.sync_in_background = true;
    const int source = static_cast<int>(i);
    o.on_end = [this, source](const Guid& tx, bool committed, const fstx::TxOverlay& overlay,
                              const std::vector<std::pair<std::string, std::string>>& replaced) {
      // Kept until End has let go of the transaction: invalidating the kernel's pages may wait
      // for reads in flight, and reads of its handles wait for End (see End).
      // Noted before the RM lets go of its locks: opens in between must not keep stale pages.
      auto entries = overlay.ChangedBackingEntries();
      entries.insert(entries.end(), replaced.begin(), replaced.end());
      coherence_.NoteEnded({tx, committed, source, overlay.TouchedObjects(), std::move(entries)});
    };
    o.replace_when = [this, source](const Guid& tx, const fstx::ObjectId& id) {
      return replace_when_ ? replace_when_(tx, source, id) : fstx::ReplaceWhen::kIfWhole;
    };
    o.executing = [this, source](const fstx::ObjectId& id) {
      return executing_ && executing_(source, id);
    };
    o.on_let_in = [this, source](const Guid& tx, const std::vector<fstx::ObjectId>& objects) {
      if (on_let_in_) on_let_in_(tx, source, objects);
    };
    o.space_owner = [this](const Guid& tx) -> std::optional<fstx::WriterIds> {
      // Live until its end returns, which waits for its prepare.
      auto ctx = Find(tx);
      if (ctx == nullptr || ctx->owner == 0) return std::nullopt;
      return fstx::WriterIds{ctx->owner, ctx->owner_gid};
    };
    o.after_end = [this, source] {
      // Built one after another at start, each recovering first: only those already there.
      if (rms_closing_.load() || static_cast<size_t>(source) >= rms_.size()) return;
      for (size_t j = 0; j < rms_.size(); ++j) {
        if (static_cast<int>(j) != source && rms_[j]->log() == rms_[source]->log())
          rms_[j]->GiveBackLog();
      }
    };
    o.report = [](bool error, const std::string& message) {
      DaemonLog(error ? LogLevel::kError : LogLevel::kNotice, message);
    };
    o.on_late_apply = [this, source](
                          const Guid& tx, const std::vector<fstx::ObjectId>& objects,
                          const std::vector<std::pair<std::string, std::string>>& entries) {
      // What readers cached while the apply was pending is stale now.
      if (on_ended_) on_ended_(EndedTx{tx, true, source, objects, entries});
    };
    // A transaction's staging is <staging_root>/<id>/ and, under it, names such as
    // park/p<dev>.<ino>: apply reaches them by path, which the kernel resolves up to PATH_MAX.
    // Past that, a commit would be acknowledged and its apply would fail for good.
    constexpr size_t kLongestStagingSuffix = 128;
    if (o.staging_root.size() + kLongestStagingSuffix >= PATH_MAX) {
      return Status::Error(ENAMETOOLONG,
                           "staging directory " + o.staging_root.substr(0, 64) + "... is " +
                               std::to_string(o.staging_root.size()) +
                               " bytes long; transactions need it shorter than " +
                               std::to_string(PATH_MAX - kLongestStagingSuffix) +
                               " bytes, for the paths apply reaches in it (use -o state= with a "
                               "shorter path on the same mount)");
    }
    KTMFS_RETURN_IF_ERROR(fstx::MakeDirs(o.staging_root));
    // One filesystem is not enough: no rename crosses a mount, a bind mount of the same
    // filesystem included, and apply renames from staging into the source.
    const auto staging_mount = fstx::MountIdOf(o.staging_root);
    const auto source_mount = fstx::MountIdOf(sources[i].path);
    if (staging_mount && source_mount && *staging_mount != *source_mount) {
      return Status::InvalidArgument("source " + sources[i].path +
                                     " is on another mount than its staging directory " +
                                     o.staging_root +
                                     " (a bind mount of one filesystem counts too); transactions "
                                     "need both on one: apply moves staged files into place by "
                                     "rename (use -o state= or -o log=dedicated)");
    }
    auto rm = std::make_unique<fstx::FsResourceManager>(std::move(o));
    KTMFS_RETURN_IF_ERROR(rm->Register().Annotate("resource manager " + label));
    const auto rm_began = std::chrono::steady_clock::now();
    KTMFS_RETURN_IF_ERROR(
        rm->Recover().Annotate("recovering resource manager " + label + " (log " + log_dir + ")"));
    const auto& r = rm->recovery_report();
    // Quiet when there was nothing to recover.
    for (const Guid& t : r.redone_txs)
      settled(t, true, label, "was committed: applied");
    for (const Guid& t : r.pending_txs)
      settled(t, true, label, "was committed: its apply failed again and stays pending");
    for (const Guid& t : r.rolled_back_txs)
      settled(t, false, label, "was unfinished: rolled back");
    if (r.redone + r.rolled_back + r.leftovers + r.pending > 0) {
      DaemonLog(LogLevel::kNotice,
                "recovery of " + label + " (" + sources[i].path + "): " + std::to_string(r.redone) +
                    " committed transaction(s) applied, " + std::to_string(r.rolled_back) +
                    " unfinished rolled back, " + std::to_string(r.leftovers) +
                    " leftover staging area(s) removed, " + std::to_string(r.pending) +
                    " committed transaction(s) still to apply, in " +
                    Seconds(std::chrono::steady_clock::now() - rm_began));
    }
    if (!options.fault_apply_pause.empty())
      rm->SetApplyHook(PauseApplyWhile(options.fault_apply_pause));
    rms_.push_back(std::move(rm));
  }
  // Transactions the TM recovered but no RM claimed (none of their RMs exists any more) are
  // rolled back now rather than listed forever.
  for (const auto& t : tm_->List()) {
    if (t.recovered && t.state == tm::TxState::kActive) (void)tm_->Rollback(t.id);
  }
  if (!in_doubt.empty()) {
    DaemonLog(LogLevel::kNotice, "recovery: " + std::to_string(in_doubt.size()) +
                                     " transaction(s) found unfinished, settled in " +
                                     Seconds(std::chrono::steady_clock::now() - recovery_began));
  }
  // Recovery ended the transactions in doubt: the next restart area forgets them.
  return tm_->Checkpoint().Annotate("transaction manager restart area");
}

TxService::~TxService() {
  {
    std::lock_guard l(reaper_mu_);
    stopping_ = true;
  }
  reaper_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  std::vector<std::shared_ptr<TxContext>> live;
  {
    std::lock_guard l(mu_);
    for (auto& [id, tx] : txs_)
      live.push_back(tx);
  }
  for (auto& tx : live) {
    Status s = End(tx, false, "the filesystem is unmounted");
    DaemonLog(LogLevel::kNotice, "transaction " + tx->id.ToString() +
                                     " rolled back: the filesystem is unmounted" +
                                     (s.ok() ? "" : ": " + s.message()));
  }
  rms_closing_ = true;  // no RM offers the others a truncation while they go
  rms_.clear();         // each moves its stream's base to its end
  if (tm_ && opened_) {
    // The next mount then reads nothing of the TM's stream before this point. (Not after a
    // failed start: the TM may not have recovered, and the log must stay as it was found.)
    Status s = tm_->Checkpoint();
    if (!s.ok()) DaemonLog(LogLevel::kError, "unmounting: " + s.message());
  }
  tm_.reset();
  // A clean unmount leaves the log closed: what was appended but never waited for (the
  // transaction manager's END records) made durable and the base file current, so the next
  // mount finds nothing to hand out again.
  for (auto& lg : logs_) {
    Status s = lg->Close();
    if (!s.ok()) DaemonLog(LogLevel::kError, "closing the log: " + s.message());
  }
  logs_.clear();
  storages_.clear();
}

}  // namespace ktmfs::fs

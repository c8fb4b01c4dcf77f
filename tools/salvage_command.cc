#include "tools/salvage_command.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "fs/mount/state_lock.h"
#include "fs/tx/staging.h"
#include "log/io.h"
#include "log/log.h"
#include "src/tm_records.h"
#include "tools/log_read.h"
#include "tools/log_salvage.h"

namespace ktmfs::tools {

namespace {

namespace klog = ktmfs::log;
namespace fstx = ktmfs::fstx;
constexpr int kExitOk = 0, kExitFailed = 1, kExitCannotOpen = 3;
constexpr char kTmStream[] = "tm";

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

bool SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Gives the directory `dir` and its files the owner and group of the log it replaces, and the
// directory its mode.
Status TakeOwnership(const std::string& dir, const struct stat& like) {
  std::vector<std::string> paths{dir};
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") paths.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  for (const auto& p : paths)
    if (::lchown(p.c_str(), like.st_uid, like.st_gid) != 0)
      return Status::Error(errno, Errno("giving " + p + " the old log's owner"));
  if (::chmod(dir.c_str(), like.st_mode & 07777) != 0)
    return Status::Error(errno, Errno("giving " + dir + " the old log's mode"));
  return Status::Ok();
}

std::string Parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

std::string Stamp() {
  char buf[32];
  const time_t now = time(nullptr);
  std::tm t;
  gmtime_r(&now, &t);
  strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &t);
  return buf;
}

// Everything readable in the damaged log, and the plan for it.
struct Reading {
  std::vector<klog::StreamInfo> streams;
  klog::LogGeometry geometry{};
  std::vector<klog::Record> records;  // what the new log may take: from each stream's base
  std::vector<std::string> damage;    // what could not be read
  std::vector<tm::TxImage> tm_live;   // the TM's restart area read (as its recovery reads it)
  bool tm_restart_read = false;
  klog::Lsn tm_restart_lsn = klog::kInvalidLsn;  // where that restart area is
  bool tm_restart_lost = false;                  // the TM has restart areas and none could be read
  // Reading stopped at damage the open scan did not know of: what follows was never seen.
  std::string stopped;
  salvage::SalvagePlan plan;
};

Result<Reading> ReadDamaged(const std::string& log_dir) {
  auto storage = klog::OpenUringStorage(log_dir);
  if (!storage.ok()) return storage.status().Annotate(log_dir);
  klog::LogOptions options;
  options.read_only = true;
  auto log = klog::Log::Open(storage->get(), options, /*create_if_missing=*/false);
  if (!log.ok()) return log.status();
  Reading r;
  r.streams = (*log)->Streams();
  r.geometry = (*log)->geometry();
  std::map<klog::StreamId, klog::StreamInfo> by_id;
  for (const auto& s : r.streams)
    by_id[s.id] = s;
  salvage::SalvagePlanner planner(r.streams, kTmStream);
  // The ranges the open scan found; reading may pass some without an error (ktmfs-log's
  // other commands report them the same way, before reading).
  for (const auto& d : (*log)->damaged_ranges()) {
    planner.Damaged(d.begin, d.end);
    r.damage.push_back("damaged records from LSN " + klog::LsnToString(d.begin) + " up to " +
                       klog::LsnToString(d.end));
  }
  ReadPastDamage(
      log->get(),
      [&](const klog::Record& rec) {
        planner.Add(rec);
        auto s = by_id.find(rec.stream);
        if (s == by_id.end() || rec.type == klog::kRestartAreaRecordType) return;
        if (rec.lsn >= s->second.base_lsn) r.records.push_back(rec);
      },
      [&](klog::Lsn begin, klog::Lsn end, const std::string& message) {
        if (message.empty()) return;  // one of the ranges above
        planner.Damaged(begin, end);
        r.damage.push_back(message);
        r.stopped = message;
      });
  r.plan = planner.Finish();
  // The TM's restart area as its recovery finds it: the newest, or the one before when the
  // newest is damaged (TransactionManager::Recover does the same).
  for (const auto& s : r.streams) {
    if (s.name != kTmStream || s.restart_lsn == klog::kInvalidLsn) continue;
    r.tm_restart_lost = true;
    auto stream = (*log)->OpenStream(s.name, /*create=*/false);
    if (!stream.ok()) continue;
    auto area = (*stream)->ReadRestartArea();
    if (!area.ok()) area = (*stream)->ReadPreviousRestartArea(s.restart_lsn);
    if (!area.ok()) continue;
    auto live = tm::DecodeRestartArea(*area, s.name);
    if (!live.ok()) continue;
    r.tm_live = std::move(*live);
    r.tm_restart_read = true;
    r.tm_restart_lsn = area->lsn;
    r.tm_restart_lost = false;
  }
  (void)(*log)->Close();
  return r;
}

// Writes the kept records into a new log in `dir`, of the damaged log's shape.
Status WriteSalvaged(const std::string& dir, const Reading& r) {
  auto storage = klog::OpenUringStorage(dir);
  if (!storage.ok()) return storage.status().Annotate(dir);
  klog::LogOptions options;
  options.block_size = r.geometry.block_size;
  options.container_size = r.geometry.container_size;
  options.max_containers = r.geometry.max_containers;
  auto log = klog::Log::Open(storage->get(), options, /*create_if_missing=*/true);
  if (!log.ok()) return log.status().Annotate("creating the salvaged log in " + dir);
  std::map<klog::StreamId, klog::Stream*> streams;
  for (const auto& s : r.streams) {
    auto stream = (*log)->OpenStream(s.name, /*create=*/true);
    if (!stream.ok()) return stream.status().Annotate("salvaged log: stream " + s.name);
    streams[s.id] = *stream;
    if (s.name == kTmStream && r.tm_restart_read) {
      // The TM starts its recovery from its restart area: the live transactions it lists,
      // without the lost ones.
      std::vector<tm::TxImage> live;
      for (const auto& img : r.tm_live)
        if (r.plan.Keeps(img.id)) live.push_back(img);
      auto area = (*stream)->WriteRestartArea(tm::EncodeRestartArea(live));
      if (!area.ok()) return area.status().Annotate("salvaged log: the TM's restart area");
    }
  }
  std::map<klog::StreamId, std::string> names;
  for (const auto& s : r.streams)
    names[s.id] = s.name;
  // The TM recovers from its restart area on, so what is before it is not needed, when the
  // restart area could be read. When it could not, the TM's records from its base are all the
  // new log gets of its decisions: every one of them goes in (a decision left out would make
  // recovery presume an abort of a committed transaction).
  const klog::Lsn tm_from = r.tm_restart_read ? r.tm_restart_lsn : klog::kInvalidLsn;
  for (const auto& rec : r.records) {
    if (names[rec.stream] == kTmStream && rec.lsn < tm_from) continue;
    if (!r.plan.Keeps(salvage::TransactionOf(rec, names[rec.stream], kTmStream))) continue;
    klog::Stream::AppendArgs a;
    a.type = rec.type;
    a.payload = rec.payload;
    auto lsn = streams[rec.stream]->Append(a);
    if (!lsn.ok())
      return lsn.status().Annotate("salvaged log: copying the record at LSN " +
                                   klog::LsnToString(rec.lsn));
  }
  KTMFS_RETURN_IF_ERROR((*log)->Flush());
  return (*log)->Close();
}

// The staged data of a lost transaction: STATE/staging/NAME/ID for any NAME.
std::vector<std::pair<std::string, std::string>> StagingOf(const std::string& state,
                                                           const Guid& tx) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string root = state + "/staging";
  DIR* d = ::opendir(root.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = root + "/" + name + "/" + tx.ToString();
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) out.emplace_back(name, path);
  }
  ::closedir(d);
  return out;
}

std::string LostLine(const salvage::Lost& l) {
  return "tx " + l.tx.ToString() + " in " + l.stream + " (" +
         (l.committed ? "committed: it may have been acknowledged and be partly applied"
                      : "outcome unknown: it may have been committed, acknowledged and partly "
                        "applied") +
         "): " + l.why;
}

}  // namespace

int RunSalvage(const std::string& log_dir_arg, const std::string& state_dir, bool dry_run,
               bool json) {
  // "log/" as completion gives it would put the new log inside the old one.
  std::string log_dir = log_dir_arg;
  while (log_dir.size() > 1 && log_dir.back() == '/')
    log_dir.pop_back();
  // No daemon may use the log while it is replaced; the lock also keeps one from starting.
  std::optional<fs::DirLock> lock;
  if (!dry_run) {
    auto l = fs::DirLock::LockStateDir(state_dir);
    if (!l.ok()) {
      std::fprintf(stderr, "ktmfs-log: salvage: %s (unmount it first)\n",
                   l.status().message().c_str());
      return kExitCannotOpen;
    }
    lock.emplace(std::move(*l));
  }
  auto reading = ReadDamaged(log_dir);
  if (!reading.ok()) {
    std::fprintf(stderr, "ktmfs-log: salvage: %s: %s\n", log_dir.c_str(),
                 reading.status().ToString().c_str());
    return kExitCannotOpen;
  }
  const Reading& r = *reading;
  const salvage::SalvagePlan& plan = r.plan;
  // What salvage cannot do without losing what it cannot name: the records after damage the
  // scan did not know of were never read, and without a restart area the TM's live set is
  // gone. Those logs are left alone.
  std::string refusal;
  if (!r.stopped.empty())
    refusal = "reading stopped at damage the open scan did not find (" + r.stopped +
              "): what follows could not be read, so what salvage would drop is unknown";
  else if (r.tm_restart_lost)
    refusal =
        "neither of the transaction manager's two newest restart areas can be read: the "
        "transactions it listed as live cannot be named";
  if (json) {
    nlohmann::json lost = nlohmann::json::array();
    for (const auto& l : plan.lost)
      lost.push_back({{"tx", l.tx.ToString()},
                      {"stream", l.stream},
                      {"committed", l.committed},
                      {"why", l.why}});
    nlohmann::json out = {
        {"damage", r.damage},
        {"records_read", plan.records_read},
        {"records_kept", plan.records_kept},
        {"transactions_kept", plan.transactions_kept},
        {"lost", lost},
        {"refused", refusal.empty() ? nlohmann::json(nullptr) : nlohmann::json(refusal)},
        {"dry_run", dry_run}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    for (const auto& d : r.damage)
      std::printf("DAMAGE: %s\n", d.c_str());
    for (const auto& l : plan.lost)
      std::printf("lost: %s\n", LostLine(l).c_str());
  }
  if (r.damage.empty()) {
    if (!json)
      std::printf("salvage: the log is not damaged; the next mount recovers it as it is\n");
    return kExitOk;
  }
  if (!refusal.empty()) {
    std::fprintf(stderr, "ktmfs-log: salvage: %s; nothing was changed\n", refusal.c_str());
    return kExitFailed;
  }
  if (dry_run) {
    if (!json)
      std::printf(
          "salvage: would keep %llu of %llu readable records (%llu transaction(s)) and lose "
          "%zu transaction(s); nothing was changed\n",
          static_cast<unsigned long long>(plan.records_kept),
          static_cast<unsigned long long>(plan.records_read),
          static_cast<unsigned long long>(plan.transactions_kept), plan.lost.size());
    return kExitOk;
  }

  const std::string stamp = Stamp();
  const std::string fresh = log_dir + ".salvage-new";
  const std::string kept_aside = log_dir + ".damaged-" + stamp;
  const std::string salvaged = state_dir + "/salvaged-" + stamp;
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "ktmfs-log: salvage: %s; the damaged log is unchanged\n", what.c_str());
    return kExitFailed;
  };
  struct stat old_st;
  if (::stat(log_dir.c_str(), &old_st) != 0) return fail(Errno(log_dir));
  // A new log left by a salvage that was interrupted is this run's to replace (the lock is ours).
  if (Status s = fstx::RemoveTree(fresh); !s.ok()) return fail(s.ToString());
  if (::mkdir(fresh.c_str(), 0700) != 0) return fail(Errno("creating " + fresh));
  if (Status s = WriteSalvaged(fresh, r); !s.ok()) return fail(s.ToString());
  // The daemon that mounts this directory owns the log, not whoever ran salvage.
  if (Status s = TakeOwnership(fresh, old_st); !s.ok()) return fail(s.ToString());

  // The lost transactions' staged data and the report go aside before the swap: once the new
  // log is in place, the next mount would remove that staging as belonging to no transaction.
  std::string report = "ktmfs-log salvage of " + log_dir + " at " + stamp + "\n";
  for (const auto& d : r.damage)
    report += "damage: " + d + "\n";
  report += "damaged log kept as " + kept_aside + "\n";
  if (::mkdir(salvaged.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(Errno("creating " + salvaged));
  for (const auto& l : plan.lost) {
    report += "lost: " + LostLine(l) + "\n";
    for (const auto& [name, path] : StagingOf(state_dir, l.tx)) {
      const std::string dir = salvaged + "/" + name;
      const std::string to = dir + "/" + l.tx.ToString();
      if ((::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) ||
          ::rename(path.c_str(), to.c_str()) != 0) {
        report += "  its staged data stays in " + path + ": " + std::strerror(errno) + "\n";
      } else {
        report += "  its staged data is in " + to + "\n";
      }
    }
  }
  if (FILE* f = std::fopen((salvaged + "/REPORT").c_str(), "w")) {
    std::fputs(report.c_str(), f);
    const bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    std::fclose(f);
    if (!ok) return fail(Errno("writing " + salvaged + "/REPORT"));
  } else {
    return fail(Errno("writing " + salvaged + "/REPORT"));
  }
  SyncDir(salvaged);
  SyncDir(state_dir);

  // The swap is one step: a crash leaves either log whole in place, never none (a mount that
  // found no log would start an empty one and forget every transaction silently).
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, log_dir.c_str(), RENAME_EXCHANGE) != 0)
    return fail(Errno("swapping " + fresh + " and " + log_dir));
  const bool renamed = ::rename(fresh.c_str(), kept_aside.c_str()) == 0;
  if (!renamed) {
    std::fprintf(stderr, "ktmfs-log: salvage: %s; the salvaged log is in place\n",
                 Errno("renaming the damaged log to " + kept_aside).c_str());
  }
  SyncDir(Parent(log_dir));
  if (!json) {
    std::printf(
        "salvage: kept %llu of %llu readable records (%llu transaction(s)), lost %zu "
        "transaction(s); the damaged log is %s, the report %s/REPORT\n",
        static_cast<unsigned long long>(plan.records_kept),
        static_cast<unsigned long long>(plan.records_read),
        static_cast<unsigned long long>(plan.transactions_kept), plan.lost.size(),
        renamed ? kept_aside.c_str() : fresh.c_str(), salvaged.c_str());
  }
  return kExitOk;
}

}  // namespace ktmfs::tools

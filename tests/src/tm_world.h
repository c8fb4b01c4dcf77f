// A TM and N test RMs on fault-injecting in-memory storage, with the log either multiplexed
// (every stream in one log) or dedicated (the TM and each RM in a log of its own). Start() runs
// the KTM start-up order; Stop() drops everything in memory, as a crashed process would.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "log/fault_storage.h"
#include "log/log.h"
#include "src/transaction_manager.h"
#include "tests/src/test_rm.h"

namespace ktmfs::tm::testing {

inline BeginOptions TxOptions(uint32_t owner, std::string description,
                              std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
  BeginOptions o;
  o.owner = owner;
  o.description = std::move(description);
  o.timeout = timeout;
  return o;
}

class World {
 public:
  World(int rm_count, bool dedicated, uint64_t seed = 1) : rm_count_(rm_count) {
    int storages = dedicated ? rm_count + 1 : 1;
    for (int i = 0; i < storages; ++i)
      storage_.push_back(std::make_unique<log::FaultInjectingStorage>(seed + i));
    for (int i = 0; i < rm_count; ++i)
      rm_ids_.push_back(Guid::Random());
  }
  ~World() { Stop(); }

  static log::LogOptions LogOpts() {
    log::LogOptions o;
    o.container_size = 256 << 10;
    o.initial_containers = 2;
    o.max_containers = 16;
    return o;
  }

  Status Start(ReplyMode mode = ReplyMode::kSync, TmOptions tm_options = {}) {
    Stop();
    for (auto& s : storage_) {
      Result<std::unique_ptr<log::Log>> l = log::Log::Open(s.get(), LogOpts(), true);
      if (!l.ok()) return l.status();
      logs_.push_back(std::move(*l));
    }
    tm_options.timeout_thread = tm_options.timeout_thread && mode != ReplyMode::kManual;
    Result<std::unique_ptr<TransactionManager>> tm =
        TransactionManager::Open(logs_[0].get(), tm_options);
    if (!tm.ok()) return tm.status();
    tm_ = std::move(*tm);
    KTMFS_RETURN_IF_ERROR(tm_->Recover());
    for (int i = 0; i < rm_count_; ++i) {
      log::Log* log = logs_[storage_.size() == 1 ? 0 : i + 1].get();
      Result<log::Stream*> stream = log->OpenStream("rm" + std::to_string(i), true);
      if (!stream.ok()) return stream.status();
      rms_.push_back(std::make_unique<TestRm>(tm_.get(), log, *stream, "rm" + std::to_string(i),
                                              rm_ids_[i], mode));
      KTMFS_RETURN_IF_ERROR(rms_.back()->Register());
      KTMFS_RETURN_IF_ERROR(rms_.back()->Recover());
    }
    return Status::Ok();
  }

  void Stop() {
    rms_.clear();
    tm_.reset();
    logs_.clear();
  }

  // Every storage loses power (the ones that already crashed stay as they are), then reboots.
  void CrashAndRestart(log::CrashMode mode) {
    for (auto& s : storage_)
      if (!s->crashed()) s->CrashNow(mode);
    Stop();
    for (auto& s : storage_)
      s->Restart();
  }

  TransactionManager& tm() { return *tm_; }
  TestRm& rm(int i) { return *rms_[i]; }
  int rm_count() const { return rm_count_; }
  log::Log& log(int i) { return *logs_[i]; }
  size_t storage_count() const { return storage_.size(); }
  log::FaultInjectingStorage& storage(size_t i) { return *storage_[i]; }
  uint64_t syncs() const {
    uint64_t n = 0;
    for (auto& s : storage_)
      n += s->syncs();
    return n;
  }

 private:
  int rm_count_;
  std::vector<std::unique_ptr<log::FaultInjectingStorage>> storage_;
  std::vector<Guid> rm_ids_;
  std::vector<std::unique_ptr<log::Log>> logs_;
  std::unique_ptr<TransactionManager> tm_;
  std::vector<std::unique_ptr<TestRm>> rms_;
};

}  // namespace ktmfs::tm::testing

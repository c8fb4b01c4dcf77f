// What the daemon needs to know about the task behind a request, read from /proc. Behind an
// interface so attribution can be tested with a made-up process tree.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "log/status.h"

namespace ktmfs::fs {

struct TaskInfo {
  pid_t tid = 0;
  pid_t tgid = 0;           // the process the task belongs to
  pid_t ppid = 0;           // the process's parent
  uid_t uid = 0;            // real uid
  uint64_t start_time = 0;  // clock ticks after boot: with the pid, identifies a task for good
  char state = 'R';         // 'Z' (zombie) and 'X' (dead) have exited

  bool exited() const { return state == 'Z' || state == 'X'; }
};

class ProcReader {
 public:
  virtual ~ProcReader() = default;
  // ENOENT (or ESRCH) once the task is gone.
  virtual Result<TaskInfo> Read(pid_t tid) = 0;
  // Now, on the clock of TaskInfo::start_time (clock ticks since boot).
  virtual uint64_t NowTicks() = 0;
  // Only the start time (what tells a task from an earlier one with the same id): cheaper than
  // Read, and all a cached answer about the task needs.
  virtual Result<uint64_t> StartTime(pid_t tid) {
    auto t = Read(tid);
    if (!t.ok()) return t.status();
    return t->start_time;
  }
};

// Reads /proc/TID/stat and /proc/TID/status.
class SystemProcReader : public ProcReader {
 public:
  Result<TaskInfo> Read(pid_t tid) override;
  uint64_t NowTicks() override;
  Result<uint64_t> StartTime(pid_t tid) override;
};

// Parses the text of /proc/TID/stat (start time, ppid) and /proc/TID/status (Tgid, Uid).
// Exposed for tests: the command name in stat may hold spaces and parentheses.
Result<TaskInfo> ParseProcFiles(pid_t tid, const std::string& stat, const std::string& status);

}  // namespace ktmfs::fs

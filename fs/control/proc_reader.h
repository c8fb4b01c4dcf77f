// What the daemon needs to know about the task behind a request, read from /proc. Behind an
// interface so attribution can be tested with a made-up process tree.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

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

// What the kernel's ptrace access check looks at (__ptrace_may_access): a task's ids, and
// whether it is dumpable (a task that ran a set-id program or changed its ids is not).
struct TaskCredentials {
  uid_t uid[4] = {};  // real, effective, saved, filesystem (the Uid: line of /proc/TID/status)
  gid_t gid[4] = {};  // the same for groups (Gid:)
  bool dumpable = true;
  // Effective capabilities (CapEff:), and whether they are the daemon's user namespace's:
  // another namespace's root shows them all, and they reach no other user's task. A made-up
  // task has them all.
  uint64_t cap_eff = ~uint64_t{0};
  bool in_daemon_user_namespace = true;
};

// Whether task `pid` is in the daemon's own user namespace. Capabilities in another one (a user
// namespace's root has them all in its /proc status) count for the kernel only over objects
// whose owner the namespace maps, and never as CAP_FSETID for the set-id rules. Unknown (the
// task is gone): as the daemon's.
bool InDaemonUserNamespace(pid_t pid);

class ProcReader {
 public:
  virtual ~ProcReader() = default;
  // ENOENT (or ESRCH) once the task is gone.
  virtual Result<TaskInfo> Read(pid_t tid) = 0;
  // Now, on the clock of TaskInfo::start_time (clock ticks since boot).
  virtual uint64_t NowTicks() = 0;
  // The processes whose parent is `pid` now (every thread's children). Empty if unknown.
  virtual std::vector<pid_t> Children(pid_t /*pid*/) { return {}; }
  // What /proc/TID/stat says (start time, parent, state; tgid and uid left 0): all a cached
  // answer about the task needs to be checked, and cheaper than Read.
  virtual Result<TaskInfo> ReadStat(pid_t tid) { return Read(tid); }
  // The task's credentials, for deciding who may bind it. ENOENT (or ESRCH) once it is gone.
  virtual Result<TaskCredentials> Credentials(pid_t tid) = 0;
  // Whether `tid` still names the task that started at `start_time`: all a cached answer about
  // it needs, asked on every request, so as cheap as can be.
  virtual bool SameTask(pid_t tid, uint64_t start_time) {
    auto t = ReadStat(tid);
    return t.ok() && t->start_time == start_time;
  }
};

// Reads /proc/TID/stat and /proc/TID/status. The stat files of recent tasks stay open: a proc
// file keeps naming the task it was opened for (reads fail with ESRCH once that task is reaped,
// even if its id is reused), so a re-read costs one pread instead of a path walk, open and close.
// SameTask keeps a pidfd of each recent task (per thread, Linux 6.9 and later; else it reads
// the stat file): polling it says whether that very task has exited, with no text to format.
class SystemProcReader : public ProcReader {
 public:
  SystemProcReader() = default;
  ~SystemProcReader() override;
  SystemProcReader(const SystemProcReader&) = delete;
  SystemProcReader& operator=(const SystemProcReader&) = delete;

  Result<TaskInfo> Read(pid_t tid) override;
  uint64_t NowTicks() override;
  Result<TaskInfo> ReadStat(pid_t tid) override;
  Result<TaskCredentials> Credentials(pid_t tid) override;
  bool SameTask(pid_t tid, uint64_t start_time) override;
  std::vector<pid_t> Children(pid_t pid) override;
  // The stat files and pidfds kept open now.
  size_t KeptDescriptors();

 private:
  Result<std::string> StatText(pid_t tid);

  std::mutex mu_;
  std::unordered_map<pid_t, int> stat_fds_;
  struct TaskFd {
    int fd;
    uint64_t start_time;
  };
  std::unordered_map<pid_t, TaskFd> pidfds_;
  std::atomic<bool> pidfds_work_{true};  // until the kernel refuses thread pidfds
};

// Parses the text of /proc/TID/stat (start time, ppid) and /proc/TID/status (Tgid, Uid).
// Exposed for tests: the command name in stat may hold spaces and parentheses.
Result<TaskInfo> ParseProcFiles(pid_t tid, const std::string& stat, const std::string& status);

// Parses the Uid: and Gid: lines of /proc/TID/status. `owner_uid` and `owner_gid` are the owner
// of the directory /proc/TID, read after the status: proc(5) makes it root:root while the task
// is not dumpable, its effective ids otherwise (so a task whose effective ids are root's reads
// as dumpable; the ids alone then keep other users out).
Result<TaskCredentials> ParseCredentials(pid_t tid, const std::string& status, uid_t owner_uid,
                                         gid_t owner_gid);

}  // namespace ktmfs::fs

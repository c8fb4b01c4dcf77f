// Which transaction a request belongs to. A transaction is bound to a scope: one thread, one
// process, or a process and the descendants it starts from then on (a shell's background jobs
// started before txbegin stay outside, as txbegin(1) says). Tasks are identified by pid *and* start
// time, so a pid reused after the bound task exited never inherits its transaction. A tree's
// descendants are found from the forks recorded since the binding (ForkTracker, where the daemon
// may listen to them), else by walking the parents /proc shows now, which a process leaves when
// it is reparented (its parent exits).
//
// FUSE gives the caller's thread id (0 when the caller is outside the daemon's pid namespace:
// such requests are never inside a transaction). Requests that arrive without a caller (page
// write-back, release) are attributed through their open file instead; that is not done here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "fs/control/proc_reader.h"
#include "log/owned_mutex.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fs {

class ForkTracker;

enum class Scope { kThread = 1, kProcess = 2, kTree = 3 };

struct Binding {
  Guid tx;
  Scope scope;
  pid_t pid;            // tid for kThread, process id otherwise
  uint64_t start_time;  // of that task, from /proc
  uid_t uid;            // owner of the bound task
  uint64_t bound_at;    // when, on the start-time clock: a tree takes in processes started since
  // kTree: the bound process's children when it was bound (pid, start time). The start-time
  // clock counts 10 ms ticks, so a child started in the same tick just before the binding
  // would otherwise pass for one started after it.
  std::vector<std::pair<pid_t, uint64_t>> earlier_children;
};

// Who asks to bind a task: its ids as the daemon sees them (FUSE passes the caller's filesystem
// ids), and whether it is root, which may bind any task, as root may ptrace any.
struct Binder {
  uid_t uid;
  gid_t gid;
  bool privileged;
};

// The kernel's rule for ptrace (__ptrace_may_access), which binding follows: a privileged binder
// may bind anything; anyone else only a dumpable task whose real, effective and saved uids are
// all its uid and whose real, effective and saved gids are all its gid. A setuid-root helper the
// binder started itself (real uid the binder's, effective uid 0) is refused. OK or EPERM with a
// message that names the process and why.
Status MayBind(pid_t pid, const TaskCredentials& target, const Binder& binder);

class TaskBindings {
 public:
  explicit TaskBindings(ProcReader* proc) : proc_(proc) {}

  // Tree membership as recorded at each fork (fork_events.h), so that a descendant reparented
  // away from the bound process stays inside; without it only the current parents count. Set
  // before the first Bind; `forks` outlives this.
  void UseForkEvents(ForkTracker* forks) { forks_ = forks; }

  // Binds `pid` (a thread for kThread; for the others any thread of the process) to `tx`.
  // ESRCH: no such task. EPERM: `binder` may not bind it (MayBind; for a process, neither the
  // task named nor its leader). EBUSY: the task is already inside a transaction.
  Status Bind(const Guid& tx, Scope scope, pid_t pid, const Binder& binder);
  void Unbind(const Guid& tx);

  // The transaction of the task `tid`, or nullopt.
  std::optional<Guid> Lookup(pid_t tid);

  // Transactions whose bound task has exited (the caller rolls them back and unbinds them).
  std::vector<Guid> FindOrphans();

  std::optional<Binding> Get(const Guid& tx) const;
  bool empty() const;

 private:
  // What was last read of a task, and its transaction as of `generation` (kUnknown: not
  // worked out yet). Only trusted while /proc still shows the same start time.
  struct CacheEntry {
    TaskInfo info;
    uint64_t generation;
    std::optional<Guid> tx;
  };
  static constexpr uint64_t kUnknown = ~uint64_t{0};
  std::optional<Guid> LookupLocked(const TaskInfo& task);
  // The task `pid`: its cached identity while it is still that task (SameTask), else read
  // afresh. Its parent and state may be stale. mu_ held.
  Result<TaskInfo> Identify(pid_t pid);
  // The same with its parent and state as /proc shows them now. mu_ held.
  Result<TaskInfo> Current(pid_t pid);
  // Reads the task whole and caches it (nothing worked out yet). mu_ held.
  Result<TaskInfo> ReadAfresh(pid_t pid);
  const Binding* FindBinding(Scope scope, pid_t pid, uint64_t start_time) const;

  ProcReader* proc_;
  ForkTracker* forks_ = nullptr;
  mutable OwnedMutex mu_;
  std::vector<Binding> bindings_;  // few at a time; a linear scan beats a map here
  uint64_t generation_ = 0;        // bumped on every change; invalidates the cache
  std::unordered_map<pid_t, CacheEntry> cache_;
};

}  // namespace ktmfs::fs

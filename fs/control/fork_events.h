// Tree scope decided at fork time. A tree-scoped transaction takes in every process its bound
// process starts from then on, and their descendants, even those that are reparented later (a
// double fork, a daemon whose parent exits): the parent chain /proc shows then no longer leads
// to the bound process, so walking it (TaskBindings) would let them out of the transaction.
//
// A daemon in the initial user and pid namespaces hears the kernel's fork and exit events
// through the proc connector (netlink; as root, or as any user from Linux 6.6 on), and records at
// each fork whose parent is inside a tree that the child is inside too. The kernel queues a fork
// event before the child first runs, so a request from the child finds the event queued: every
// lookup reads what is queued before it answers, under the same lock as the thread that reads the
// events otherwise, so events are applied in the order the kernel sent them. The parent-chain walk
// stays as the fallback: for a process the record does not hold (events lost, too many processes)
// and for a daemon that cannot listen (unprivileged on an older kernel, or in another namespace).
//
// The record is kept for tree bindings only, while there are any: the daemon listens from the
// first tree binding to the end of the last, and the kernel sends nothing otherwise.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fs/control/proc_reader.h"
#include "log/owned_mutex.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fs {

// One event of the kernel's, with pids as the initial pid namespace sees them.
struct ProcEvent {
  enum class Kind {
    kFork,  // `pid` (a new process when pid == tgid, else a new thread of tgid) by parent_tgid
    kExit,  // the task `pid` of process `tgid` exited (every thread's exit is reported)
    kLost,  // the kernel dropped events here (the socket's buffer was full)
  };
  Kind kind = Kind::kFork;
  pid_t parent_tgid = 0;
  pid_t pid = 0;
  pid_t tgid = 0;
};

// Where the events come from: the proc connector, or a test's script.
class ProcEventSource {
 public:
  virtual ~ProcEventSource() = default;
  // Starts (true) or stops (false) the kernel's sending of events to this source.
  virtual Status Listen(bool on) = 0;
  // Appends every event already queued, without waiting, in the kernel's order; a kLost event
  // where some were dropped. An error only if the source itself failed.
  virtual Status Read(std::vector<ProcEvent>* out) = 0;
  // A descriptor that polls readable while events are queued; -1 if there is none.
  virtual int fd() const { return -1; }
};

// The kernel's proc connector. Open fails (a Status saying why) when the daemon may not listen:
// without CAP_NET_ADMIN before Linux 6.6 (EPERM), or outside the initial user and pid
// namespaces (where the kernel ignores the request, so no acknowledgement comes).
class ProcConnector : public ProcEventSource {
 public:
  static Result<std::unique_ptr<ProcConnector>> Open();
  ~ProcConnector() override;
  ProcConnector(const ProcConnector&) = delete;
  ProcConnector& operator=(const ProcConnector&) = delete;

  Status Listen(bool on) override;
  Status Read(std::vector<ProcEvent>* out) override;
  int fd() const override { return fd_; }

 private:
  explicit ProcConnector(int fd) : fd_(fd), seq_(static_cast<uint32_t>(getpid()) << 12) {}
  // Sends PROC_CN_MCAST_LISTEN or _IGNORE; with `wait_ack`, waits for the kernel's answer.
  Status Control(bool listen, bool wait_ack);
  // One datagram the kernel sent (others' are skipped): its size, 0 if none is waiting. Sets
  // *lost when the socket overflowed (events were dropped) meanwhile.
  Result<size_t> ReceiveFromKernel(char* buf, size_t size, bool* lost);

  int fd_;
  uint32_t seq_;  // starts apart from other listeners', whose answers come to us too
  bool listening_ = false;
};

// The record of who is inside which tree, kept from the events. Thread-safe.
class ForkTracker {
 public:
  // Beyond this many recorded processes, further ones are left to the parent-chain walk: the
  // record stays bounded whatever a bound shell forks.
  static constexpr size_t kMaxRecords = 32768;

  ForkTracker(ProcReader* proc, ProcEventSource* source) : proc_(proc), source_(source) {}
  ~ForkTracker();  // stops the thread
  ForkTracker(const ForkTracker&) = delete;
  ForkTracker& operator=(const ForkTracker&) = delete;

  // Reads the events in a thread of its own as they come, so the kernel's buffer does not
  // overflow while no request asks. Without it, lookups read them.
  Status StartThread();

  // The tree of `tx`, bound to the process `pid` (start time `start_time`) at `bound_at`: from
  // now on its children, except `earlier_children`, and their descendants are recorded. The
  // events queued until now are applied first, then the children the process has now are
  // read into `earlier_children` (those queued events cannot be told from the children's), so
  // the walk and the record leave out the same ones. An error (the kernel refused to send
  // events) leaves the tree unrecorded and `earlier_children` untouched.
  Status AddTree(const Guid& tx, pid_t pid, uint64_t start_time, uint64_t bound_at,
                 std::vector<std::pair<pid_t, uint64_t>>* earlier_children);
  // Forgets the tree of `tx` and every process recorded in it.
  void RemoveTree(const Guid& tx);

  // The tree the process `tgid` (started at `start_time`) was forked into, if recorded, after
  // applying every event queued so far.
  std::optional<Guid> Lookup(pid_t tgid, uint64_t start_time);

  // Applies the queued events (what the thread does when they come). False once the source
  // has failed: nothing is recorded from then on, and the walk decides alone.
  bool Pump();

  size_t records() const;

 private:
  static constexpr uint64_t kGone = ~uint64_t{0};  // start time of a process that has exited
  struct Tree {
    Guid tx;
    pid_t pid;
    uint64_t start_time;
    uint64_t bound_at;
    std::vector<std::pair<pid_t, uint64_t>> earlier_children;
    bool exited = false;  // its pid may name another process soon
  };
  struct Record {
    Guid tx;
    uint64_t start_time;  // kGone: it exited before it was recorded; only its children count
    int threads;  // live threads; -1 unknown (recorded by Resync): gone at its leader's exit
  };

  void Run(int stop_fd);
  // Reads and applies what is queued. mu_ held.
  void DrainLocked();
  void Apply(const std::vector<ProcEvent>& events);
  void ApplyFork(const ProcEvent& e, bool exits_later);
  void ApplyExit(const ProcEvent& e);
  // The tree the process `tgid` is in as a parent, if any.
  const Guid* ParentTree(pid_t tgid) const;
  // After lost events: drops records /proc no longer confirms, and records the descendants
  // the trees have now by their parents. Exits lost meanwhile may have freed pids for reuse,
  // so no record is trusted unchecked.
  void Resync();
  void Insert(pid_t pid, Record r);
  void CheckInvariants(bool every_record) const;

  ProcReader* proc_;
  ProcEventSource* source_;
  mutable OwnedMutex mu_;
  std::vector<Tree> trees_;  // few at a time
  std::unordered_map<pid_t, Record> records_;
  bool warned_full_ = false;
  bool broken_ = false;  // the source failed: records are no longer kept
  uint64_t lost_ = 0;    // times the kernel dropped events
  std::vector<ProcEvent> batch_;

  int stop_fd_ = -1;
  std::thread thread_;
};

}  // namespace ktmfs::fs

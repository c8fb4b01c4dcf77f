#include "fs/control/fork_events.h"

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>

#include "fs/mount/daemon_log.h"

namespace ktmfs::fs {
namespace {

// A burst of forks (a parallel build) must fit in the socket while the event thread waits for
// a core: some 20000 events. The kernel drops what does not fit, and says so (ENOBUFS).
constexpr int kReceiveBuffer = 16 << 20;
// How long Open waits for the kernel to acknowledge the first listen request: it sends none
// where it ignores the request (another pid namespace), and answers at once otherwise.
constexpr int kAckTimeoutMs = 1000;

Status ConnectorError(const std::string& what) {
  return Status::FromErrno("proc connector: " + what);
}

// Copies out the connector message in `nl` and its process event (the event follows a 20-byte
// header, so its 64-bit timestamp is not aligned in place). `len` is how much of the event the
// kernel sent: the union's members differ in size. False if `nl` holds no process event.
bool Unpack(const nlmsghdr* nl, cn_msg* cn, proc_event* ev, size_t* len) {
  if (nl->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg))) return false;
  const auto* data = static_cast<const char*>(NLMSG_DATA(nl));
  std::memcpy(cn, data, sizeof *cn);
  if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC) return false;
  if (cn->len < offsetof(proc_event, event_data) ||
      nl->nlmsg_len < NLMSG_LENGTH(sizeof(cn_msg) + cn->len)) {
    return false;
  }
  *ev = proc_event{};
  *len = std::min<size_t>(cn->len, sizeof *ev);
  std::memcpy(ev, data + sizeof(cn_msg), *len);
  return true;
}

// Calls f(cn, event, length of the event) for each connector message of a datagram.
template <typename F>
void ForEachMessage(char* buf, size_t size, F f) {
  int n = static_cast<int>(size);
  for (auto* nl = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nl, static_cast<size_t>(n));
       nl = NLMSG_NEXT(nl, n)) {
    cn_msg cn;
    proc_event ev;
    size_t len = 0;
    if (Unpack(nl, &cn, &ev, &len)) f(cn, ev, len);
  }
}

}  // namespace

// ---- ProcConnector ---------------------------------------------------------------------------

Result<std::unique_ptr<ProcConnector>> ProcConnector::Open() {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
  if (fd < 0) return ConnectorError("socket");
  std::unique_ptr<ProcConnector> c(new ProcConnector(fd));
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;  // the kernel picks the port id; no group joined yet
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return ConnectorError("bind");
  // FORCE goes past rmem_max (root only); an unprivileged daemon gets rmem_max at most.
  const int size = kReceiveBuffer;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0) {
    return ConnectorError("SO_RCVBUF");
  }
  // Once, to know the kernel honours it; then quiet until a tree is bound.
  KTMFS_RETURN_IF_ERROR(c->Listen(true));
  KTMFS_RETURN_IF_ERROR(c->Listen(false));
  return c;
}

ProcConnector::~ProcConnector() {
  if (listening_) (void)Control(false, false);
  close(fd_);
}

Status ProcConnector::Listen(bool on) {
  if (on == listening_) return Status::Ok();
  int group = CN_IDX_PROC;
  if (on) {
    // Joining the group needs CAP_NET_ADMIN before Linux 6.6: an unprivileged daemon on an
    // older kernel stops here (EPERM).
    if (setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
      return ConnectorError("joining the proc events group");
    if (Status s = Control(true, true); !s.ok()) {
      (void)setsockopt(fd_, SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, &group, sizeof group);
      return s;
    }
    listening_ = true;
    return Status::Ok();
  }
  // The kernel counts listeners, and builds no events while there are none.
  Status s = Control(false, false);
  listening_ = false;
  if (setsockopt(fd_, SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, &group, sizeof group) != 0 && s.ok())
    s = ConnectorError("leaving the proc events group");
  return s;
}

Status ProcConnector::Control(bool listen, bool wait_ack) {
  const uint32_t seq = ++seq_;
  const uint32_t op = listen ? PROC_CN_MCAST_LISTEN : PROC_CN_MCAST_IGNORE;
  // nlmsghdr, cn_msg, then the operation (cn_msg ends in a flexible array: no struct of all).
  alignas(nlmsghdr) char req[NLMSG_SPACE(sizeof(cn_msg) + sizeof op)] = {};
  auto* nl = reinterpret_cast<nlmsghdr*>(req);
  nl->nlmsg_len = NLMSG_LENGTH(sizeof(cn_msg) + sizeof op);
  nl->nlmsg_type = NLMSG_DONE;
  auto* cn = static_cast<cn_msg*>(NLMSG_DATA(nl));
  cn->id.idx = CN_IDX_PROC;
  cn->id.val = CN_VAL_PROC;
  cn->seq = seq;
  cn->ack = seq;
  cn->len = sizeof op;
  std::memcpy(cn->data, &op, sizeof op);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, req, nl->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) !=
      static_cast<ssize_t>(nl->nlmsg_len)) {
    return ConnectorError(listen ? "asking for events" : "stopping events");
  }
  if (!wait_ack) return Status::Ok();

  // The answer comes to the group, among events (discarded: no tree is recorded before this
  // returns) and maybe other listeners' answers.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kAckTimeoutMs);
  alignas(nlmsghdr) char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::Error(ETIMEDOUT,
                           "proc connector: the kernel did not acknowledge the listen request "
                           "(a pid namespace other than the initial one?)");
    }
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
      return ConnectorError("poll");
    bool lost = false;
    auto n = ReceiveFromKernel(buf, sizeof buf, &lost);
    if (!n.ok()) return n.status();
    std::optional<Status> answer;
    ForEachMessage(buf, *n, [&](const cn_msg& cn, const proc_event& ev, size_t len) {
      // The kernel answers with our ack number plus one (its sequence number is its own).
      if (answer || cn.ack != seq + 1 || ev.what != proc_event::PROC_EVENT_NONE) return;
      if (len < offsetof(proc_event, event_data) + sizeof ev.event_data.ack) return;
      if (ev.event_data.ack.err != 0) {
        errno = static_cast<int>(ev.event_data.ack.err);
        answer = ConnectorError("the kernel refused to send process events");
        return;
      }
      answer = Status::Ok();
    });
    if (answer) return *answer;
  }
}

Result<size_t> ProcConnector::ReceiveFromKernel(char* buf, size_t size, bool* lost) {
  for (;;) {
    sockaddr_nl from{};
    socklen_t from_len = sizeof from;
    ssize_t n =
        recvfrom(fd_, buf, size, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EAGAIN) return size_t{0};
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        *lost = true;
        continue;
      }
      return ConnectorError("recv");
    }
    // Only the kernel's word counts: an event puts processes into transactions, an answer
    // decides whether tree scope may rely on events.
    if (from.nl_pid != 0) continue;
    return static_cast<size_t>(n);
  }
}

Status ProcConnector::Read(std::vector<ProcEvent>* out) {
  alignas(nlmsghdr) char buf[4096];
  for (;;) {
    bool lost = false;
    auto n = ReceiveFromKernel(buf, sizeof buf, &lost);
    if (lost) out->push_back(ProcEvent{ProcEvent::Kind::kLost, 0, 0, 0});
    if (!n.ok()) return n.status();
    if (*n == 0) return Status::Ok();
    ForEachMessage(buf, *n, [&](const cn_msg&, const proc_event& ev, size_t len) {
      constexpr size_t kHead = offsetof(proc_event, event_data);
      if (ev.what == proc_event::PROC_EVENT_FORK && len >= kHead + sizeof ev.event_data.fork) {
        out->push_back(ProcEvent{ProcEvent::Kind::kFork, ev.event_data.fork.parent_tgid,
                                 ev.event_data.fork.child_pid, ev.event_data.fork.child_tgid});
      } else if (ev.what == proc_event::PROC_EVENT_EXIT &&
                 len >= kHead + 2 * sizeof(__kernel_pid_t)) {
        out->push_back(ProcEvent{ProcEvent::Kind::kExit, 0, ev.event_data.exit.process_pid,
                                 ev.event_data.exit.process_tgid});
      }
    });
  }
}

// ---- ForkTracker -----------------------------------------------------------------------------

ForkTracker::~ForkTracker() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
}

Status ForkTracker::StartThread() {
  if (source_->fd() < 0) return Status::InvalidArgument("fork events: the source cannot be polled");
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) return Status::Error(errno, "fork events: eventfd");
  thread_ = std::thread([this] { Run(stop_fd_); });
  return Status::Ok();
}

void ForkTracker::Run(int stop_fd) {
  pollfd p[2] = {{source_->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      DaemonLog(LogLevel::kWarning, std::string("fork events: poll: ") + std::strerror(errno) +
                                        "; tree scope follows parents only now");
      return;
    }
    if (p[1].revents != 0) return;
    if (p[0].revents != 0 && !Pump()) return;
  }
}

bool ForkTracker::Pump() {
  std::lock_guard lock(mu_);
  DrainLocked();
  return !broken_;
}

void ForkTracker::DrainLocked() {
  mu_.AssertHeld();
  if (broken_) return;
  batch_.clear();
  Status s = source_->Read(&batch_);
  if (!batch_.empty()) Apply(batch_);
  if (!s.ok()) {
    // Exits it will not tell could free recorded pids for others: nothing recorded is trusted.
    DaemonLog(LogLevel::kWarning, "fork events: " + s.ToString() +
                                      "; tree-scoped transactions follow the current parents "
                                      "only from now on");
    broken_ = true;
    records_.clear();
  }
  batch_.clear();
  if (batch_.capacity() > 4096) batch_.shrink_to_fit();
}

void ForkTracker::Apply(const std::vector<ProcEvent>& events) {
  if (trees_.empty()) return;  // before the first tree, after the last: nothing to record
  // The last exit event of each process in the batch: a process that exits later in it may
  // be reaped already, and its pid reused, so /proc cannot be asked about it.
  std::unordered_map<pid_t, size_t> last_exit;
  for (size_t i = 0; i < events.size(); ++i)
    if (events[i].kind == ProcEvent::Kind::kExit && events[i].pid == events[i].tgid)
      last_exit[events[i].pid] = i;
  for (size_t i = 0; i < events.size(); ++i) {
    const ProcEvent& e = events[i];
    switch (e.kind) {
      case ProcEvent::Kind::kFork: {
        auto it = last_exit.find(e.pid);
        ApplyFork(e, it != last_exit.end() && it->second > i);
        break;
      }
      case ProcEvent::Kind::kExit:
        ApplyExit(e);
        break;
      case ProcEvent::Kind::kLost:
        // Said at the 1st, 2nd, 4th... time: a fork storm overflows the buffer again and again.
        ++lost_;
        if ((lost_ & (lost_ - 1)) == 0) {
          DaemonLog(LogLevel::kWarning,
                    "fork events: the kernel dropped process events (" + std::to_string(lost_) +
                        " times so far); tree-scoped transactions are re-read from /proc");
        }
        Resync();
        break;
    }
  }
  CheckInvariants(false);
}

const Guid* ForkTracker::ParentTree(pid_t tgid) const {
  if (auto it = records_.find(tgid); it != records_.end()) return &it->second.tx;
  for (const Tree& t : trees_)
    if (t.pid == tgid && !t.exited) return &t.tx;
  return nullptr;
}

void ForkTracker::ApplyFork(const ProcEvent& e, bool exits_later) {
  if (e.pid != e.tgid) {  // a new thread
    auto it = records_.find(e.tgid);
    if (it != records_.end() && it->second.threads > 0) ++it->second.threads;
    return;
  }
  const Guid* tx = ParentTree(e.parent_tgid);
  if (tx == nullptr) return;
  uint64_t start = kGone;
  if (!exits_later) {
    // The child has not exited as of the events read, so its pid still names it.
    if (auto stat = proc_->ReadStat(e.pid); stat.ok()) start = stat->start_time;
  }
  for (const Tree& t : trees_) {
    if (t.pid != e.parent_tgid || t.exited) continue;
    // A child of the bound process itself: the same rule as the walk's (TaskBindings), so
    // that both leave out the children it had when it was bound.
    for (const auto& [pid, child_start] : t.earlier_children)
      if (pid == e.pid && (start == kGone || start == child_start)) return;
    if (start != kGone && start < t.bound_at) return;
  }
  Insert(e.pid, Record{*tx, start, 1});
}

void ForkTracker::ApplyExit(const ProcEvent& e) {
  if (auto it = records_.find(e.tgid); it != records_.end()) {
    Record& r = it->second;
    if (r.threads < 0 ? e.pid == e.tgid : --r.threads <= 0) records_.erase(it);
  }
  if (e.pid == e.tgid) {
    // Its pid is free for reuse once it is reaped; the binding ends with it (the reaper).
    for (Tree& t : trees_)
      if (t.pid == e.pid) t.exited = true;
  }
}

void ForkTracker::Insert(pid_t pid, Record r) {
  auto it = records_.find(pid);
  if (it != records_.end()) {
    // Only after lost events can a pid be recorded twice; the newer word wins, its thread
    // count unknown.
    it->second = r;
    it->second.threads = -1;
    return;
  }
  if (records_.size() >= kMaxRecords) {
    if (!warned_full_) {
      DaemonLog(LogLevel::kWarning, "fork events: more than " + std::to_string(kMaxRecords) +
                                        " processes in tree-scoped transactions; further ones "
                                        "are found by their parents only");
      warned_full_ = true;
    }
    return;
  }
  records_.emplace(pid, r);
}

void ForkTracker::Resync() {
  for (auto it = records_.begin(); it != records_.end();) {
    if (it->second.start_time == kGone || !proc_->SameTask(it->first, it->second.start_time)) {
      it = records_.erase(it);
    } else {
      it->second.threads = -1;
      ++it;
    }
  }
  for (Tree& t : trees_)
    if (!t.exited && !proc_->SameTask(t.pid, t.start_time)) t.exited = true;

  // Descendants still below a bound process or a recorded one are found by their parents;
  // those reparented while events were lost are not.
  std::deque<std::pair<pid_t, const Tree*>> todo;  // (process, its tree if it is the bound one)
  for (const Tree& t : trees_)
    if (!t.exited) todo.emplace_back(t.pid, &t);
  for (const auto& [pid, r] : records_)
    todo.emplace_back(pid, nullptr);
  while (!todo.empty() && records_.size() < kMaxRecords) {
    auto [parent, tree] = todo.front();
    todo.pop_front();
    const Guid* tx = tree != nullptr ? &tree->tx : ParentTree(parent);
    if (tx == nullptr) continue;
    const Guid parent_tx = *tx;
    for (pid_t child : proc_->Children(parent)) {
      if (records_.count(child) != 0) continue;
      auto stat = proc_->ReadStat(child);
      if (!stat.ok()) continue;
      if (tree != nullptr) {
        const auto& earlier = tree->earlier_children;
        if (stat->start_time < tree->bound_at ||
            std::find(earlier.begin(), earlier.end(), std::make_pair(child, stat->start_time)) !=
                earlier.end()) {
          continue;
        }
      }
      Insert(child, Record{parent_tx, stat->start_time, -1});
      todo.emplace_back(child, nullptr);
    }
  }
}

Status ForkTracker::AddTree(const Guid& tx, pid_t pid, uint64_t start_time, uint64_t bound_at,
                            std::vector<std::pair<pid_t, uint64_t>>* earlier_children) {
  std::lock_guard lock(mu_);
  if (broken_) return Status::IoError("fork events: the source failed earlier");
  if (trees_.empty()) KTMFS_RETURN_IF_ERROR(source_->Listen(true));
  // Forks queued until now happened before the tree: applied without it.
  DrainLocked();
  Tree t{tx, pid, start_time, bound_at, {}, false};
  for (pid_t c : proc_->Children(pid)) {
    if (auto info = proc_->ReadStat(c); info.ok())
      t.earlier_children.emplace_back(c, info->start_time);
  }
  // Its exit may have been among the events just read, before the tree was there to see it.
  t.exited = !proc_->SameTask(pid, start_time);
  *earlier_children = t.earlier_children;
  trees_.push_back(std::move(t));
  CheckInvariants(true);
  return Status::Ok();
}

void ForkTracker::RemoveTree(const Guid& tx) {
  std::lock_guard lock(mu_);
  const size_t before = trees_.size();
  trees_.erase(
      std::remove_if(trees_.begin(), trees_.end(), [&](const Tree& t) { return t.tx == tx; }),
      trees_.end());
  if (trees_.size() == before) return;
  std::erase_if(records_, [&](const auto& kv) { return kv.second.tx == tx; });
  if (trees_.empty()) {
    if (Status s = source_->Listen(false); !s.ok())
      DaemonLog(LogLevel::kWarning, "fork events: " + s.ToString());
    DrainLocked();  // what is still queued concerns no tree
    warned_full_ = false;
  }
  CheckInvariants(true);
}

std::optional<Guid> ForkTracker::Lookup(pid_t tgid, uint64_t start_time) {
  std::lock_guard lock(mu_);
  if (trees_.empty()) return std::nullopt;
  // The kernel queued the fork of the asking process before it first ran: once what is
  // queued is applied, its record is there if it is in a tree.
  DrainLocked();
  auto it = records_.find(tgid);
  if (it == records_.end() || it->second.start_time != start_time) return std::nullopt;
  return it->second.tx;
}

size_t ForkTracker::records() const {
  std::lock_guard lock(mu_);
  return records_.size();
}

void ForkTracker::CheckInvariants(bool every_record) const {
#ifndef NDEBUG
  assert(records_.size() <= kMaxRecords);
  assert(!trees_.empty() || records_.empty());
  assert(!broken_ || records_.empty());
  // Per record only when trees come and go: after every read of events it would cost a scan
  // of the whole record per fork.
  if (!every_record) return;
  for (const auto& [pid, r] : records_) {
    assert(pid > 0);
    assert(r.threads != 0);  // erased at its last thread's exit
    assert(std::any_of(trees_.begin(), trees_.end(), [&](const Tree& t) { return t.tx == r.tx; }));
  }
#else
  (void)every_record;
#endif
}

}  // namespace ktmfs::fs

#include "fs/control/proc_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace ktmfs::fs {
namespace {

// PIDFD_THREAD (Linux 6.9): a pidfd for one thread, readable when that thread exits.
constexpr unsigned kPidfdThread = O_EXCL;

// Descriptors (stat files, pidfds) kept open at most, each kind.
constexpr size_t kMaxKeptFds = 256;

// The whole of an open proc file, from its start: proc files are generated at each read.
Result<std::string> ReadAll(int fd, const std::string& path) {
  std::string text(4096, '\0');
  size_t len = 0;
  for (;;) {
    ssize_t n = pread(fd, text.data() + len, text.size() - len, static_cast<off_t>(len));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Error(errno, path);
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
    // These files are made whole at each read: a short one that ends a line is all of it,
    // and saves the read that would return 0.
    if (len < text.size() && text[len - 1] == '\n') break;
    if (len == text.size()) text.resize(text.size() * 2);
  }
  text.resize(len);
  return text;
}

// Descriptors kept per task are bounded: past the bound the map starts again (tasks come and
// go, and the next request of a live one opens its descriptor anew).
template <typename Map, typename FdOf>
void MakeRoom(Map& map, FdOf fd_of) {
  if (map.size() < kMaxKeptFds) return;
  for (const auto& entry : map)
    close(fd_of(entry.second));
  map.clear();
}

Result<std::string> ReadSmallFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, path);
  auto text = ReadAll(fd, path);
  close(fd);
  return text;
}

// The number after "Key:\t" in /proc/TID/status.
bool StatusField(const std::string& status, const char* key, long long* out) {
  std::string needle = std::string("\n") + key + ":";
  size_t at = status.find(needle);
  if (at == std::string::npos) {
    if (status.compare(0, needle.size() - 1, needle, 1) != 0) return false;
    at = 0;
  } else {
    at += 1;
  }
  const char* p = status.c_str() + at + std::strlen(key) + 1;
  char* end = nullptr;
  *out = std::strtoll(p, &end, 10);
  return end != p;
}

}  // namespace

Result<TaskInfo> ParseProcFiles(pid_t tid, const std::string& stat, const std::string& status) {
  auto bad = [tid](const char* what) {
    return Status::Corruption("/proc/" + std::to_string(tid) + ": cannot parse " + what);
  };
  // "pid (comm) state ppid ..."; comm may contain ") ", so the last ')' ends it.
  size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return bad("stat");
  // Fields after comm: 3 state, 4 ppid, ..., 22 starttime.
  const char* p = stat.c_str() + close_paren + 1;
  long long ppid = 0;
  unsigned long long start = 0;
  char state = '?';
  for (int field = 3; field <= 22; ++field) {
    while (*p == ' ')
      ++p;
    if (!*p) return bad("stat");
    char* end = nullptr;
    if (field == 3) state = *p;
    if (field == 4) ppid = std::strtoll(p, &end, 10);
    if (field == 22) start = std::strtoull(p, &end, 10);
    while (*p && *p != ' ')
      ++p;
  }
  long long tgid = 0, uid = 0;
  if (!StatusField(status, "Tgid", &tgid) || !StatusField(status, "Uid", &uid))
    return bad("status");
  TaskInfo info;
  info.tid = tid;
  info.tgid = static_cast<pid_t>(tgid);
  info.ppid = static_cast<pid_t>(ppid);
  info.uid = static_cast<uid_t>(uid);
  info.start_time = start;
  info.state = state;
  return info;
}

SystemProcReader::~SystemProcReader() {
  for (const auto& [tid, fd] : stat_fds_)
    close(fd);
  for (const auto& [tid, t] : pidfds_)
    close(t.fd);
}

bool SystemProcReader::SameTask(pid_t tid, uint64_t start_time) {
  if (tid <= 0) return false;
  {
    std::lock_guard l(mu_);
    auto it = pidfds_.find(tid);
    if (it != pidfds_.end()) {
      if (it->second.start_time == start_time) {
        pollfd p{it->second.fd, POLLIN, 0};
        // Readable once the task has exited; until then the id cannot name another one.
        if (poll(&p, 1, 0) == 0) return true;
      }
      close(it->second.fd);
      pidfds_.erase(it);
    }
  }
  int fd = pidfds_work_ ? static_cast<int>(syscall(SYS_pidfd_open, tid, kPidfdThread)) : -1;
  if (fd < 0 && errno == EINVAL) pidfds_work_ = false;  // before Linux 6.9
  // The stat file read after the pidfd was opened says which task the pidfd names.
  auto stat = ReadStat(tid);
  const bool same = stat.ok() && stat->start_time == start_time;
  if (fd < 0) return same;
  if (!same) {
    close(fd);
    return false;
  }
  std::lock_guard l(mu_);
  MakeRoom(pidfds_, [](const TaskFd& t) { return t.fd; });
  pidfds_[tid] = {fd, start_time};
  return true;
}

size_t SystemProcReader::KeptDescriptors() {
  std::lock_guard l(mu_);
  return stat_fds_.size() + pidfds_.size();
}

Result<std::string> SystemProcReader::StatText(pid_t tid) {
  if (tid <= 0) return Status::Error(ESRCH, "no such task " + std::to_string(tid));
  std::string path = "/proc/" + std::to_string(tid) + "/stat";
  std::lock_guard l(mu_);
  auto it = stat_fds_.find(tid);
  if (it != stat_fds_.end()) {
    auto text = ReadAll(it->second, path);
    if (text.ok()) return text;
    // That task is gone; the id may name a newer one now.
    close(it->second);
    stat_fds_.erase(it);
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, path);
  auto text = ReadAll(fd, path);
  if (!text.ok()) {
    close(fd);
    return text;
  }
  MakeRoom(stat_fds_, [](int f) { return f; });
  stat_fds_[tid] = fd;
  return text;
}

Result<TaskInfo> SystemProcReader::Read(pid_t tid) {
  auto stat = StatText(tid);
  if (!stat.ok()) return stat.status();
  auto status = ReadSmallFile("/proc/" + std::to_string(tid) + "/status");
  if (!status.ok()) return status.status();
  return ParseProcFiles(tid, *stat, *status);
}

Result<TaskCredentials> ParseCredentials(pid_t tid, const std::string& status, uid_t owner_uid,
                                         gid_t owner_gid) {
  TaskCredentials c;
  for (const char* key : {"Uid", "Gid"}) {
    // The key starts a line: the text's first, or one after a newline.
    const std::string needle = std::string(key) + ":";
    size_t at = 0;
    if (status.compare(0, needle.size(), needle) != 0) {
      at = status.find("\n" + needle);
      if (at == std::string::npos)
        return Status::Corruption("/proc/" + std::to_string(tid) + "/status: no " + key + " line");
      ++at;
    }
    const char* p = status.c_str() + at + needle.size();
    for (int i = 0; i < 4; ++i) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(p, &end, 10);
      if (end == p)
        return Status::Corruption("/proc/" + std::to_string(tid) + "/status: cannot parse " + key);
      if (key[0] == 'U') {
        c.uid[i] = static_cast<uid_t>(v);
      } else {
        c.gid[i] = static_cast<gid_t>(v);
      }
      p = end;
    }
  }
  c.dumpable = owner_uid == c.uid[1] && owner_gid == c.gid[1];
  c.cap_eff = 0;
  if (size_t at = status.find("\nCapEff:"); at != std::string::npos)
    c.cap_eff = std::strtoull(status.c_str() + at + 8, nullptr, 16);
  return c;
}

bool InDaemonUserNamespace(pid_t pid) {
  static const std::string own = [] {
    char buf[64];
    const ssize_t n = readlink("/proc/self/ns/user", buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }();
  char buf[64];
  const ssize_t n =
      readlink(("/proc/" + std::to_string(pid) + "/ns/user").c_str(), buf, sizeof buf);
  return n <= 0 || own.empty() || own == std::string(buf, static_cast<size_t>(n));
}

Result<TaskCredentials> SystemProcReader::Credentials(pid_t tid) {
  if (tid <= 0) return Status::Error(ESRCH, "no such task " + std::to_string(tid));
  const std::string dir = "/proc/" + std::to_string(tid);
  // The status first, then the owner: a task that runs a set-id program in between shows
  // its new effective ids in the status, or becomes root:root (not dumpable) after it, so
  // either way it is not taken for the task it was.
  auto status = ReadSmallFile(dir + "/status");
  if (!status.ok()) return status.status();
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return Status::Error(errno, dir);
  auto c = ParseCredentials(tid, *status, st.st_uid, st.st_gid);
  if (c.ok()) c->in_daemon_user_namespace = InDaemonUserNamespace(tid);
  return c;
}

Result<TaskInfo> SystemProcReader::ReadStat(pid_t tid) {
  auto stat = StatText(tid);
  if (!stat.ok()) return stat.status();
  auto info = ParseProcFiles(tid, *stat, "Tgid:\t0\nUid:\t0\n");
  if (!info.ok()) return info.status();
  return info;
}

std::vector<pid_t> SystemProcReader::Children(pid_t pid) {
  std::vector<pid_t> out;
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(tasks.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    auto text = ReadSmallFile(tasks + "/" + e->d_name + "/children");
    if (!text.ok()) continue;
    const char* p = text->c_str();
    while (*p) {
      char* end = nullptr;
      long v = std::strtol(p, &end, 10);
      if (end == p) break;
      out.push_back(static_cast<pid_t>(v));
      p = end;
      while (*p == ' ' || *p == '\n')
        ++p;
    }
  }
  closedir(d);
  return out;
}

uint64_t SystemProcReader::NowTicks() {
  // /proc's starttime counts boot-time clock ticks (suspend included), hence CLOCK_BOOTTIME.
  static const long ticks_per_second = sysconf(_SC_CLK_TCK);
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * static_cast<uint64_t>(ticks_per_second) +
         static_cast<uint64_t>(ts.tv_nsec) * static_cast<uint64_t>(ticks_per_second) / 1000000000u;
}

}  // namespace ktmfs::fs

#include "fs/proc_reader.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace ktmfs::fs {
namespace {

Result<std::string> ReadSmallFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, path);
  std::string text(4096, '\0');
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, text.data() + len, text.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return Status::Error(err, path);
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
    if (len == text.size()) text.resize(text.size() * 2);
  }
  close(fd);
  text.resize(len);
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

Result<TaskInfo> SystemProcReader::Read(pid_t tid) {
  if (tid <= 0) return Status::Error(ESRCH, "no such task " + std::to_string(tid));
  std::string dir = "/proc/" + std::to_string(tid);
  auto stat = ReadSmallFile(dir + "/stat");
  if (!stat.ok()) return stat.status();
  auto status = ReadSmallFile(dir + "/status");
  if (!status.ok()) return status.status();
  return ParseProcFiles(tid, *stat, *status);
}

Result<uint64_t> SystemProcReader::StartTime(pid_t tid) {
  if (tid <= 0) return Status::Error(ESRCH, "no such task " + std::to_string(tid));
  auto stat = ReadSmallFile("/proc/" + std::to_string(tid) + "/stat");
  if (!stat.ok()) return stat.status();
  // The status file is only needed for fields the start time does not depend on.
  auto info = ParseProcFiles(tid, *stat, "Tgid:\t0\nUid:\t0\n");
  if (!info.ok()) return info.status();
  return info->start_time;
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

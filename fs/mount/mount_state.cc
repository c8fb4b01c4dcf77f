#include "fs/mount/mount_state.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace ktmfs::fs {

namespace {

// One line of /proc/self/mountinfo, the fields used here.
struct MountEntry {
  std::string mount_point;
  std::vector<std::string> mount_options;  // per mount: rw/ro, nosuid, nodev, ...
  std::string fstype;                      // "fuse.ktmfs"
  std::vector<std::string> super_options;  // per superblock: rw/ro, user_id=, ...
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && s.size() - i > 3 && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    out.push_back(item);
  return out;
}

bool Has(const std::vector<std::string>& list, const char* item) {
  for (const auto& s : list)
    if (s == item) return true;
  return false;
}

// Every mount in a mountinfo text, in the order the kernel lists them.
std::vector<MountEntry> ParseMounts(std::istream& in) {
  std::vector<MountEntry> out;
  for (std::string line; std::getline(in, line);) {
    // id parent major:minor root mount-point mount-options [optional...] - fstype source super
    std::istringstream f(line);
    std::string id, parent, devno, root, point, options, field;
    if (!(f >> id >> parent >> devno >> root >> point >> options)) continue;
    while (f >> field && field != "-") {
    }
    std::string fstype, source, super;
    if (!(f >> fstype >> source >> super)) continue;
    out.push_back(MountEntry{Unescape(point), SplitCommas(options), fstype, SplitCommas(super)});
  }
  return out;
}

// Every mount of this namespace.
std::vector<MountEntry> Mounts() {
  std::ifstream in("/proc/self/mountinfo");
  return ParseMounts(in);
}

// The topmost mount at `mountpoint` (the last listed: later mounts stack on earlier ones).
std::optional<MountEntry> FindIn(std::vector<MountEntry> mounts, const std::string& mountpoint) {
  std::optional<MountEntry> found;
  for (MountEntry& e : mounts)
    if (e.mount_point == mountpoint) found = std::move(e);
  return found;
}

std::optional<MountEntry> Find(const std::string& mountpoint) {
  return FindIn(Mounts(), mountpoint);
}

Result<bool> ReadOnlyIn(std::vector<MountEntry> mounts, const std::string& mountpoint) {
  auto e = FindIn(std::move(mounts), mountpoint);
  if (!e || e->fstype.compare(0, 4, "fuse") != 0)
    return Status::NotFound("no FUSE filesystem is mounted on " + mountpoint);
  return Has(e->mount_options, "ro") || Has(e->super_options, "ro");
}

// The whole table through `fd`, from its start; nullopt if a read fails.
std::optional<std::string> ReadAll(int fd) {
  if (::lseek(fd, 0, SEEK_SET) != 0) return std::nullopt;
  std::string text;
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

ReadOnlyWatch::ReadOnlyWatch(std::string mountpoint, std::string table)
    : mountpoint_(std::move(mountpoint)), table_(std::move(table)) {}

ReadOnlyWatch::~ReadOnlyWatch() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t ReadOnlyWatch::reads() const {
  std::lock_guard l(mu_);
  return reads_;
}

Result<bool> ReadOnlyWatch::Get() {
  std::lock_guard l(mu_);
  if (fd_ == -2) fd_ = ::open(table_.c_str(), O_RDONLY | O_CLOEXEC);
  const auto now = std::chrono::steady_clock::now();
  if (fd_ >= 0 && answer_ && now - read_at_ < std::chrono::seconds(1)) {
    // The poll takes the event it reports: poll first, read after, so a change made while the
    // table is read is reported again by the next poll.
    pollfd p{fd_, POLLPRI, 0};
    int n;
    do {
      n = ::poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return *answer_;
    if (n < 0 || (p.revents & POLLNVAL)) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ++reads_;
  read_at_ = now;
  std::optional<std::string> text;
  if (fd_ >= 0) text = ReadAll(fd_);
  if (!text) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    std::ifstream in(table_);
    answer_ = ReadOnlyIn(ParseMounts(in), mountpoint_);
    return *answer_;
  }
  std::istringstream in(*text);
  answer_ = ReadOnlyIn(ParseMounts(in), mountpoint_);
  return *answer_;
}

bool KtmfsMountedAt(const std::string& mountpoint) {
  auto e = Find(mountpoint);
  return e && e->fstype == "fuse.ktmfs";
}

Status Remount(const std::string& mountpoint, bool read_only) {
  auto e = Find(mountpoint);
  if (!e) return Status::NotFound("nothing is mounted on " + mountpoint);
  if (e->fstype != "fuse.ktmfs") {
    return Status::InvalidArgument(mountpoint + " is a " + e->fstype +
                                   " mount, not ktmfs: nothing to remount");
  }
  // MS_REMOUNT replaces the mount's flags with those given: keep the ones it has.
  unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
  const struct {
    const char* name;
    unsigned long flag;
  } kept[] = {{"nosuid", MS_NOSUID},          {"nodev", MS_NODEV},
              {"noexec", MS_NOEXEC},          {"noatime", MS_NOATIME},
              {"nodiratime", MS_NODIRATIME},  {"relatime", MS_RELATIME},
              {"strictatime", MS_STRICTATIME}};
  for (const auto& k : kept)
    if (Has(e->mount_options, k.name)) flags |= k.flag;
  if (::mount(nullptr, mountpoint.c_str(), nullptr, flags, nullptr) != 0) {
    const int err = errno;
    std::string why = std::strerror(err);
    if (err == EBUSY && read_only) why = "files are open for writing on it";
    return Status::Error(
        err, "remounting " + mountpoint + (read_only ? " read-only" : " read-write") + ": " + why);
  }
  return Status::Ok();
}

}  // namespace ktmfs::fs

#include "fs/ops/setid.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

namespace ktmfs::fs {
namespace {

constexpr int kCapFsetid = 4;  // linux/capability.h

// The value of one "Name:\t..." line of a /proc status text.
std::string Field(const std::string& text, const char* name) {
  const std::string key = std::string("\n") + name + ":";
  size_t at = text.find(key);
  if (at == std::string::npos) return {};
  at += key.size();
  size_t end = text.find('\n', at);
  return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

}  // namespace

namespace {

// Whether an id map ("inside outside count" per line) has `id` among its outside ids.
bool MapHas(pid_t pid, const char* map, uint32_t id) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + map);
  unsigned long long inside, outside, count;
  while (in >> inside >> outside >> count)
    if (id >= outside && id - outside < count) return true;
  return false;
}

}  // namespace

bool MapsIds(pid_t pid, uid_t uid, gid_t gid) {
  return MapHas(pid, "uid_map", uid) && MapHas(pid, "gid_map", gid);
}

bool SetidCaller::InGroup(gid_t gid) const {
  return gid == fsgid || std::find(groups.begin(), groups.end(), gid) != groups.end();
}

mode_t SetidBitsToDrop(mode_t mode, gid_t gid, const SetidCaller& caller, SetidChange change) {
  if (change == SetidChange::kChmod)
    return (mode & S_ISGID) && !(caller.InGroup(gid) || caller.fsetid) ? S_ISGID : 0;
  if (!S_ISREG(mode)) return 0;
  mode_t drop = 0;
  if (mode & S_ISUID) drop |= S_ISUID;
  // setattr_should_drop_sgid: with group execute always; without it (a mandatory-locking mark
  // once, kept since 6.2 only for callers in the group or with CAP_FSETID) unless the caller
  // is in the file's group or privileged.
  if ((mode & S_ISGID) && ((mode & S_IXGRP) || !(caller.InGroup(gid) || caller.fsetid)))
    drop |= S_ISGID;
  // A write by a caller with CAP_FSETID keeps both; chown drops set-user-id regardless.
  if (change == SetidChange::kWrite && caller.fsetid) drop = 0;
  return drop;
}

SetidCaller SetidCallerOf(const Caller& who) {
  SetidCaller caller;
  // The kernel's word wins over the uid and over CapEff, which is the task's own user
  // namespace's: CAP_FSETID counts only in the initial one. Without its word (no
  // HANDLE_KILLPRIV_V2), a task in another user namespace is taken to lack it.
  const bool kernel_says_none = who.kernel_denies_fsetid();
  caller.fsetid = who.uid() == 0 && !kernel_says_none;
  caller.fsgid = who.gid();
  if (who.pid() <= 0) return caller;
  std::string text = "\n";
  {
    // The calling thread's own status: credentials are per thread.
    const std::string path = "/proc/" + std::to_string(who.pid()) + "/status";
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return caller;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
      text.append(buf, static_cast<size_t>(n));
    close(fd);
  }
  const std::string cap = Field(text, "CapEff");
  if (!cap.empty())
    caller.fsetid = !kernel_says_none &&
                    ((std::strtoull(cap.c_str(), nullptr, 16) >> kCapFsetid) & 1) &&
                    InDaemonUserNamespace(who.pid());
  // "Gid:" lists real, effective, saved and filesystem ids.
  unsigned g[4];
  if (std::sscanf(Field(text, "Gid").c_str(), "%u %u %u %u", &g[0], &g[1], &g[2], &g[3]) == 4)
    caller.fsgid = g[3];
  const std::string groups = Field(text, "Groups");
  const char* p = groups.c_str();
  char* end = nullptr;
  for (;;) {
    unsigned long v = std::strtoul(p, &end, 10);
    if (end == p) break;
    caller.groups.push_back(static_cast<gid_t>(v));
    p = end;
  }
  return caller;
}

mode_t SetidBitsToDrop(const Caller& who, const struct stat& st, SetidChange change) {
  if (!S_ISREG(st.st_mode) || !(st.st_mode & (S_ISUID | S_ISGID))) return 0;
  return SetidBitsToDrop(st.st_mode, st.st_gid, SetidCallerOf(who), change);
}

int DropSetidBeforeWrite(const Caller& who, int fd, bool* cleared) {
  *cleared = false;
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  const mode_t drop = SetidBitsToDrop(who, st, SetidChange::kWrite);
  if ((st.st_mode & drop) == 0) return 0;
  if (fchmod(fd, st.st_mode & 07777 & ~drop) != 0) return errno;
  *cleared = true;
  return 0;
}

bool AdjustSetattrForSetid(const Caller& who, const struct stat& before, struct stat* attr,
                           int* to_set) {
  const int set = *to_set;
  const bool sets_mode = (set & FUSE_SET_ATTR_MODE) != 0;
  std::optional<SetidChange> change;
  if ((set & ~FUSE_SET_ATTR_CTIME) == 0 || (set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
    change = SetidChange::kChown;
  } else if (set & FUSE_SET_ATTR_SIZE) {
    change = SetidChange::kWrite;
  }
  const mode_t mode = sets_mode ? attr->st_mode : before.st_mode;
  const bool setid_before = S_ISREG(before.st_mode) && (before.st_mode & (S_ISUID | S_ISGID));
  const bool sgid_asked = sets_mode && (attr->st_mode & S_ISGID);
  if (!(change && setid_before) && !sgid_asked) return false;  // no need to ask /proc
  const SetidCaller caller = SetidCallerOf(who);
  mode_t drop = 0;
  if (change) drop |= SetidBitsToDrop(before.st_mode, before.st_gid, caller, *change);
  if (sgid_asked) {
    const gid_t gid = (set & FUSE_SET_ATTR_GID) ? attr->st_gid : before.st_gid;
    drop |= SetidBitsToDrop(attr->st_mode, gid, caller, SetidChange::kChmod);
  }
  if ((mode & drop) == 0) return false;
  attr->st_mode = (mode & ~drop) | (before.st_mode & S_IFMT);
  *to_set |= FUSE_SET_ATTR_MODE;
  return true;
}

}  // namespace ktmfs::fs

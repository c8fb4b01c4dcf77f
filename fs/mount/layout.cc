#include "fs/mount/layout.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <set>

#include "fs/mount/daemon_log.h"
#include "fs/mount/source_overlap.h"

namespace ktmfs::fs {
namespace {

Result<std::string> CanonicalDirectory(const std::string& path, const std::string& what) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) {
    return Status::FromErrno(errno, what + " " + path);
  }
  struct stat st;
  if (stat(buf, &st) != 0) return Status::FromErrno(errno, what + " " + path);
  if (!S_ISDIR(st.st_mode))
    return Status::Error(ENOTDIR, what + " " + path + " is not a directory");
  return std::string(buf);
}

// Records the directory `c` (canonical) as hidden if it lies strictly inside a source, and the
// directories between the source and it as guarded.
Status HideIfInside(const std::string& c, const std::string& what,
                    const std::vector<Source>& sources, std::vector<HiddenEntry>* hidden,
                    std::vector<std::pair<dev_t, ino_t>>* guarded) {
  struct stat st, pst;
  std::string parent = c.substr(0, c.rfind('/'));
  if (parent.empty()) parent = "/";
  if (stat(c.c_str(), &st) != 0 || stat(parent.c_str(), &pst) != 0) {
    return Status::FromErrno(errno, what + " " + c);
  }
  for (const Source& s : sources) {
    if (c.compare(0, s.path.size() + 1, s.path + "/") == 0 || (s.path == "/" && c != "/")) {
      hidden->push_back(
          HiddenEntry{pst.st_dev, pst.st_ino, c.substr(c.rfind('/') + 1), st.st_dev, st.st_ino});
      for (std::string dir = parent; dir.size() > s.path.size(); dir.resize(dir.rfind('/'))) {
        struct stat dst;
        if (stat(dir.c_str(), &dst) != 0) return Status::FromErrno(errno, what + " " + c);
        guarded->emplace_back(dst.st_dev, dst.st_ino);
      }
      break;
    }
  }
  return Status::Ok();
}

// The daemon creates, renames and removes what it finds in its state directory (staging
// areas, at every mount), as root. A directory that another user owns or may write could lead
// it anywhere: the owner of a backing directory renamed the root-owned .ktmfs away and made
// one of its own, whose `staging` symlink had the next mount remove files outside every
// backing directory. So the state directory must be the daemon's user's, writable by no one
// else; and the default one, inside the first source, no symlink (a given -o state= is the
// administrator's to point anywhere). Its parent, if someone else may write it, could have it
// replaced while mounted: that is said.
Status CheckStateDirOwner(const std::string& path, bool given) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "state directory " + path);
  if (S_ISLNK(st.st_mode) && !given) {
    return Status::Error(ELOOP, "state directory " + path +
                                    " is a symbolic link: it must be a directory (remove the "
                                    "link, or give the directory with -o state=)");
  }
  if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, "state directory " + path);
  const uid_t me = geteuid();
  if (st.st_uid != me) {
    return Status::Error(EPERM, "state directory " + path + " belongs to uid " +
                                    std::to_string(st.st_uid) + ", not to the daemon's uid " +
                                    std::to_string(me) +
                                    ": its owner could lead the daemon's removals anywhere "
                                    "(chown it, or use -o state=)");
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return Status::Error(EPERM, "state directory " + path + " may be written by others (mode " +
                                    mode + "): chmod go-w it");
  }
  std::string parent = path.substr(0, path.rfind('/'));
  if (parent.empty()) parent = "/";
  struct stat pst;
  if (stat(parent.c_str(), &pst) == 0 && !(pst.st_mode & S_ISVTX) &&
      (pst.st_uid != me || (pst.st_mode & (S_IWGRP | S_IWOTH)))) {
    DaemonLog(LogLevel::kWarning,
              "state directory " + path + ": its parent " + parent +
                  " may be changed by another user, who could replace it while mounted; an "
                  "-o state= directory only the daemon's user may change is safer");
  }
  return Status::Ok();
}

// Creates `path` (mode 0700) if missing and records it as hidden if it lies inside a source.
// `given`: named by -o state=.
Status PrepareStateDir(const std::string& path, bool given, const std::vector<Source>& sources,
                       std::vector<HiddenEntry>* hidden,
                       std::vector<std::pair<dev_t, ino_t>>* guarded) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "state directory " + path);
  }
  KTMFS_RETURN_IF_ERROR(CheckStateDirOwner(path, given));
  auto canon = CanonicalDirectory(path, "state directory");
  if (!canon.ok()) return canon.status();
  for (const Source& s : sources) {
    if (*canon == s.path) {
      return Status::InvalidArgument("state directory " + *canon +
                                     " cannot be a backing directory");
    }
  }
  return HideIfInside(*canon, "state directory", sources, hidden, guarded);
}

bool ValidName(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos;
}

}  // namespace

Result<std::vector<Source>> ParseSources(const std::string& spec) {
  std::vector<Source> out;
  size_t eq = spec.find('=');
  bool named = eq != std::string::npos && spec.substr(0, eq).find('/') == std::string::npos;
  if (!named) {
    out.push_back(Source{"", spec});
    return out;
  }
  std::set<std::string> seen;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(':', pos);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(pos, end - pos);
    size_t e = item.find('=');
    if (e == std::string::npos) {
      return Status::InvalidArgument("source '" + item + "': expected NAME=DIRECTORY");
    }
    std::string name = item.substr(0, e), path = item.substr(e + 1);
    if (!ValidName(name)) return Status::InvalidArgument("source name '" + name + "' is invalid");
    if (path.empty()) return Status::InvalidArgument("source " + name + " has no directory");
    if (!seen.insert(name).second) {
      return Status::InvalidArgument("source name '" + name + "' is given twice");
    }
    out.push_back(Source{name, path});
    pos = end + 1;
  }
  return out;
}

Result<Layout> Layout::Create(const Options& options) {
  auto parsed = ParseSources(options.source);
  if (!parsed.ok()) return parsed.status();
  Layout l;
  for (Source& s : *parsed) {
    auto canon = CanonicalDirectory(s.path, s.name.empty() ? "source" : "source " + s.name);
    if (!canon.ok()) return canon.status();
    s.path = *canon;
    l.sources_.push_back(s);
  }
  // Everything the command line gets wrong is said before anything is created.
  KTMFS_RETURN_IF_ERROR(CheckSourcesDisjoint(l.sources_));
  std::string mountpoint;
  if (!options.mountpoint.empty()) {
    auto mp = CanonicalDirectory(options.mountpoint, "mountpoint");
    if (!mp.ok()) return mp.status();
    mountpoint = *mp;
  }
  l.state_dir_ = options.state_dir.empty() ? l.sources_[0].path + "/.ktmfs" : options.state_dir;
  KTMFS_RETURN_IF_ERROR(PrepareStateDir(l.state_dir_, !options.state_dir.empty(), l.sources_,
                                        &l.hidden_, &l.guarded_));
  char buf[PATH_MAX];
  if (realpath(l.state_dir_.c_str(), buf) != nullptr) l.state_dir_ = buf;
  l.state_dirs_.push_back(l.state_dir_);
  if (options.log_mode == LogMode::kDedicated) {
    // Each source keeps its own log in its .ktmfs; those are hidden too.
    for (const Source& s : l.sources_) {
      std::string dir = s.path + "/.ktmfs";
      bool already = false;
      for (const HiddenEntry& h : l.hidden_) {
        struct stat st;
        if (stat(dir.c_str(), &st) == 0 && st.st_dev == h.dev && st.st_ino == h.ino) already = true;
      }
      if (already) continue;
      KTMFS_RETURN_IF_ERROR(PrepareStateDir(dir, false, l.sources_, &l.hidden_, &l.guarded_));
      l.state_dirs_.push_back(dir);
    }
  }
  if (!mountpoint.empty()) {
    // A mountpoint inside a source would lead the daemon into its own mount (a deadlock):
    // inside the mount it is an invisible entry, like the state directory.
    KTMFS_RETURN_IF_ERROR(
        HideIfInside(mountpoint, "mountpoint", l.sources_, &l.hidden_, &l.guarded_));
  }
  return l;
}

bool Layout::IsHidden(dev_t parent_dev, ino_t parent_ino, const char* name) const {
  for (const HiddenEntry& h : hidden_) {
    if (h.parent_ino == parent_ino && h.parent_dev == parent_dev && h.name == name) return true;
  }
  return false;
}

bool Layout::IsGuardedDir(dev_t dev, ino_t ino) const {
  for (const auto& [d, i] : guarded_) {
    if (i == ino && d == dev) return true;
  }
  return false;
}

bool Layout::IsHiddenObject(dev_t dev, ino_t ino) const {
  for (const HiddenEntry& h : hidden_) {
    if (h.ino == ino && h.dev == dev) return true;
  }
  return false;
}

}  // namespace ktmfs::fs

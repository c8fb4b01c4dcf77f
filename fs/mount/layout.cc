#include "fs/mount/layout.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cstring>
#include <set>

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

// Creates `path` (mode 0700) if missing and records it as hidden if it lies inside a source.
Status PrepareStateDir(const std::string& path, const std::vector<Source>& sources,
                       std::vector<HiddenEntry>* hidden,
                       std::vector<std::pair<dev_t, ino_t>>* guarded) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "state directory " + path);
  }
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
  KTMFS_RETURN_IF_ERROR(PrepareStateDir(l.state_dir_, l.sources_, &l.hidden_, &l.guarded_));
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
      KTMFS_RETURN_IF_ERROR(PrepareStateDir(dir, l.sources_, &l.hidden_, &l.guarded_));
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

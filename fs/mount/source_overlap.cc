#include "fs/mount/source_overlap.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ktmfs::fs {
namespace {

std::string Describe(const Source& s) {
  return (s.name.empty() ? std::string("source") : "source " + s.name) + " (" + s.path + ")";
}

}  // namespace

Result<std::vector<DirId>> AncestorChain(const std::string& path) {
  // Walking ".." from a descriptor follows the directories themselves, whatever path named
  // them; a path's text would miss an alias made by a symlink or a bind mount.
  int fd = open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "source " + path);
  std::vector<DirId> chain;
  for (;;) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      int err = errno;
      close(fd);
      return Status::FromErrno(err, "source " + path);
    }
    const DirId id{st.st_dev, st.st_ino};
    // The root is its own parent.
    if (!chain.empty() && chain.back() == id) break;
    chain.push_back(id);
    int parent = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int err = errno;
    close(fd);
    if (parent < 0) return Status::FromErrno(err, "source " + path);
    fd = parent;
  }
  close(fd);
  return chain;
}

Status CheckDisjoint(const std::vector<Source>& sources,
                     const std::vector<std::vector<DirId>>& chains) {
  for (size_t i = 0; i < sources.size(); i++) {
    for (size_t j = 0; j < sources.size(); j++) {
      if (i == j || chains[i].empty() || chains[j].empty()) continue;
      const DirId& self = chains[i].front();
      if (self == chains[j].front()) {
        if (i > j) continue;  // said once, in the order given
        return Status::InvalidArgument(Describe(sources[i]) + " and " + Describe(sources[j]) +
                                       " are the same directory; sources must not overlap");
      }
      if (std::find(chains[j].begin() + 1, chains[j].end(), self) != chains[j].end()) {
        return Status::InvalidArgument(Describe(sources[j]) + " is inside " + Describe(sources[i]) +
                                       "; sources must not overlap");
      }
    }
  }
  return Status::Ok();
}

Status CheckSourcesDisjoint(const std::vector<Source>& sources) {
  if (sources.size() < 2) return Status::Ok();
  std::vector<std::vector<DirId>> chains;
  for (const Source& s : sources) {
    auto c = AncestorChain(s.path);
    if (!c.ok()) return c.status();
    chains.push_back(std::move(*c));
  }
  return CheckDisjoint(sources, chains);
}

}  // namespace ktmfs::fs

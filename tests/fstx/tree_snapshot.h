// A directory tree as comparable text: every name with its type, mode, size and contents (or
// symlink target), link count and user xattrs. Times and inode numbers are left out: apply
// changes the one, and a reference tree built with plain syscalls has different others.
#pragma once

#include <dirent.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {

inline std::string DescribeXattrs(const std::string& path) {
  char names[4096];
  ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
  std::map<std::string, std::string> out;
  for (ssize_t i = 0; n > 0 && i < n;) {
    std::string name(names + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (name.rfind("user.", 0) != 0) continue;
    char value[4096];
    ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), value, sizeof value);
    out[name] = v >= 0 ? std::string(value, static_cast<size_t>(v)) : "?";
  }
  std::string s;
  for (const auto& [k, v] : out)
    s += " " + k + "=" + v;
  return s;
}

inline void SnapshotInto(const std::string& root, const std::string& rel,
                         std::map<std::string, std::string>* out) {
  std::string path = rel.empty() ? root : root + "/" + rel;
  auto names = ListNames(path);
  if (!names) return;
  for (const auto& n : *names) {
    std::string r = rel.empty() ? n : rel + "/" + n;
    std::string p = root + "/" + r;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    std::ostringstream desc;
    if (S_ISDIR(st.st_mode)) {
      desc << "dir " << std::oct << (st.st_mode & 07777);
    } else if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t len = ::readlink(p.c_str(), target, sizeof target);
      desc << "symlink " << std::string(target, len > 0 ? static_cast<size_t>(len) : 0);
    } else if (S_ISREG(st.st_mode)) {
      std::ifstream in(p, std::ios::binary);
      std::stringstream data;
      data << in.rdbuf();
      desc << "file " << std::oct << (st.st_mode & 07777) << std::dec << " size " << st.st_size
           << " nlink " << st.st_nlink << " data " << data.str();
    } else {
      desc << "node " << std::oct << st.st_mode;
    }
    desc << DescribeXattrs(p);
    (*out)[r] = desc.str();
    if (S_ISDIR(st.st_mode)) SnapshotInto(root, r, out);
  }
}

inline std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  SnapshotInto(root, "", &out);
  return out;
}

}  // namespace ktmfs::fstx

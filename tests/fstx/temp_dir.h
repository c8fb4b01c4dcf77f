// File helpers shared by the fstx tests: a fresh directory under /tmp for one test, removed
// (with everything in it) afterwards; counting open descriptors; writing a file; a test pattern;
// listing a directory.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "fs/tx/staging.h"

namespace ktmfs::fstx {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ktmfs-fstx-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    if (p == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = p ? p : "/nonexistent";
  }
  ~TempDir() { (void)RemoveTree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// How many descriptors this process has open.
inline size_t OpenDescriptors() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr)
      ++n;
    ::closedir(d);
  }
  return n;
}

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// `n` bytes starting at `seed` and cycling through the next 22 characters: a write at the
// wrong offset shows.
inline std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>(seed + i % 23);
  return s;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The names in a directory, without "." and "..", in readdir order; nullopt if it cannot be
// opened.
inline std::optional<std::vector<std::string>> ListNames(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return std::nullopt;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

}  // namespace ktmfs::fstx

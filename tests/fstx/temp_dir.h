// A fresh directory under /tmp for one test, removed (with everything in it) afterwards.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

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

}  // namespace ktmfs::fstx

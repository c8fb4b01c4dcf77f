// The control interface's entry points: the reserved "user.ktmfs." extended attributes and the
// restricted ioctls of tools/ktmfs.h, turned into calls on the transaction service.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "fs/fuse/caller.h"

namespace ktmfs::fs {

class Filesystem;
struct Inode;

inline constexpr char kControlXattrPrefix[] = "user.ktmfs.";

inline bool IsControlXattr(const char* name) {
  return std::strncmp(name, kControlXattrPrefix, sizeof kControlXattrPrefix - 1) == 0;
}

// setxattr of a control name; returns an errno.
int HandleControlSetxattr(Filesystem& fs, const CallerContext& caller, const char* name,
                          const char* value, size_t size);
// getxattr of a control name: fills *value or returns an errno (ENODATA: no transaction).
int HandleControlGetxattr(Filesystem& fs, const CallerContext& caller, Inode* inode,
                          const char* name, std::string* value);

// A restricted ioctl as the kernel delivered it: the command, its input (for _IOW/_IOWR) and
// room for its output (for _IOR/_IOWR), both sized by the command's encoding.
struct ControlIoctl {
  CallerContext caller;
  Inode* inode;
  unsigned int cmd;
  const void* in;
  size_t in_size;
  size_t out_size;
};

// Returns an errno; on success fills `out` (at most out_size bytes).
int HandleControlIoctl(Filesystem& fs, const ControlIoctl& request, std::vector<char>* out);

}  // namespace ktmfs::fs

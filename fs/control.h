// The control interface's entry points (transactions, once the transaction manager is joined):
// the reserved "user.ktmfs." extended attributes and the restricted ioctls. For now every
// control request is refused; the plumbing (who called, on which node, with which bytes)
// is in place so the transaction manager plugs in here.
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

#include "fs/caller.h"

namespace ktmfs::fs {

inline constexpr char kControlXattrPrefix[] = "user.ktmfs.";

inline bool IsControlXattr(const char* name) {
  return std::strncmp(name, kControlXattrPrefix, sizeof kControlXattrPrefix - 1) == 0;
}

// setxattr of a control name; returns an errno (EPERM until transactions exist).
int HandleControlXattr(const CallerContext& caller, const char* name, const char* value,
                       size_t size);

// A restricted ioctl as the kernel delivered it: the command, its input (for _IOW/_IOWR) and
// room for its output (for _IOR/_IOWR), both sized by the command's encoding.
struct ControlIoctl {
  CallerContext caller;
  unsigned int cmd;
  bool on_directory;
  const void* in;
  size_t in_size;
  size_t out_size;
};

// Returns an errno; on success fills `out` (at most out_size bytes) and `*result`.
int HandleControlIoctl(const ControlIoctl& request, std::vector<char>* out, int* result);

}  // namespace ktmfs::fs

// The daemon's shared state (options, layout, inode table) and the helpers every group of
// operations uses: resolving node ids, looking names up, and the rules for the virtual root
// and hidden entries. The operations themselves live in ops_*.cc, grouped by kind.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <ctime>
#include <string>

#include "fs/inode_table.h"
#include "fs/layout.h"
#include "fs/options.h"

namespace ktmfs::fs {

class Filesystem {
 public:
  Filesystem(Options options, Layout layout);

  // Opens the backing roots; the table then holds them pinned.
  Status OpenRoots();

  const Options& options() const { return options_; }
  const Layout& layout() const { return layout_; }
  InodeTable& inodes() { return inodes_; }
  bool kernel_checks() const { return options_.default_permissions; }

  Inode* Get(fuse_ino_t id) const { return inodes_.FromNodeId(id); }

  // Looks `name` up in `parent` and counts one lookup; returns 0 or an errno. Refuses hidden
  // entries and keeps ".." of a root at the root.
  int Lookup(Inode* parent, const char* name, fuse_entry_param* e);
  // Fills `e` for an inode the caller already counted.
  int FillEntry(Inode* inode, fuse_entry_param* e);
  int Stat(Inode* inode, struct stat* st) const;

  // Whether `name` in `parent` is a hidden entry (the state directory).
  bool IsHiddenName(const Inode* parent, const char* name) const {
    return !parent->is_virtual_root() && layout_.IsHidden(parent->dev, parent->ino, name);
  }

 private:
  void VirtualRootAttr(struct stat* st) const;

  Options options_;
  Layout layout_;
  InodeTable inodes_;
  std::vector<Inode*> source_roots_;
  struct timespec mounted_at_ {};
};

inline Filesystem& Fs(fuse_req_t req) {
  return *static_cast<Filesystem*>(fuse_req_userdata(req));
}

// "/proc/self/fd/N": reopens an O_PATH descriptor with real access (open, chmod, xattrs).
struct ProcPath {
  explicit ProcPath(int fd);
  const char* c_str() const { return buf; }
  char buf[40];
};

// Registers every operation group.
void AddEntryOps(fuse_lowlevel_ops* ops);
void AddFileOps(fuse_lowlevel_ops* ops);
void AddDirOps(fuse_lowlevel_ops* ops);
void AddXattrOps(fuse_lowlevel_ops* ops);
void AddSessionOps(fuse_lowlevel_ops* ops);
void AddControlOps(fuse_lowlevel_ops* ops);

}  // namespace ktmfs::fs

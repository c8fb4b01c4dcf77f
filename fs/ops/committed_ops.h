// The committed view's operations: what a request outside any transaction, or on an object no
// transaction of the caller's changed, does to the backing directory. Each acts as the caller
// (IdentityScope, fs/fuse/caller.h) where the backing filesystem must check permissions, first
// refuses what a live transaction holds (txops::CheckNotHeld and its kin), and returns the Reply
// to send (fs/fuse/reply.h) without sending it. The adapter (fs/ops/adapter.h) calls them as it
// calls the transaction's (tx_ops.h); tests call them without a mount.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/filesystem.h"

namespace ktmfs::fs::committed {

// Names and attributes (committed_entry.cc).
Reply Lookup(const Caller& caller, Filesystem& fs, Inode* parent, const char* name);
// Through the committed file's descriptor `fi` if given.
Reply Getattr(Filesystem& fs, Inode* inode, fuse_file_info* fi);
Reply Setattr(const Caller& caller, Filesystem& fs, Inode* inode, struct stat* attr, int to_set,
              fuse_file_info* fi);
Reply Readlink(Inode* inode);
// mknod, mkdir (`mode` has S_IFDIR) and symlink (S_IFLNK, with `link_target`), as txops::Make.
Reply Make(const Caller& caller, Filesystem& fs, Inode* parent, const char* name, mode_t mode,
           dev_t rdev, const char* link_target);
Reply Link(const Caller& caller, Filesystem& fs, Inode* inode, Inode* parent, const char* newname);
Reply Remove(const Caller& caller, Filesystem& fs, Inode* parent, const char* name, bool dir);
Reply Rename(const Caller& caller, Filesystem& fs, Inode* parent, const char* name,
             Inode* newparent, const char* newname, unsigned int flags);

// Open files (committed_file.cc). The handle count of `inode` is the caller's (the adapter's).
Reply Open(const Caller& caller, Filesystem& fs, Inode* inode, fuse_file_info* fi);
Reply Create(const Caller& caller, Filesystem& fs, Inode* parent, const char* name, mode_t mode,
             fuse_file_info* fi);
Reply Write(const Caller& caller, Filesystem& fs, fuse_ino_t ino, fuse_bufvec* in, off_t off,
            fuse_file_info* fi);
// Counts (`open`) or uncounts (at its release) a committed handle of `inode` opened with
// `open_flags` among the node's writers and programs run from it (Inode::write_handles).
void CountOpenFor(Inode* inode, int open_flags, bool open);

// Extended attributes (committed_xattr.cc); not the control interface's.
Reply Getxattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name, size_t size);
Reply Listxattr(const Caller& caller, Filesystem& fs, Inode* inode, size_t size);
Reply Setxattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name,
               const char* value, size_t size, int flags);
Reply Removexattr(const Caller& caller, Filesystem& fs, Inode* inode, const char* name);

}  // namespace ktmfs::fs::committed

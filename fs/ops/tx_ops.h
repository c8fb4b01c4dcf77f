// The FUSE operations as a task inside a transaction gets them: each reads the transaction's
// view and records its change (locks, staging, an op record) instead of touching the backing
// directory. ops_*.cc route a request here when Classify says kTx; each function replies.
#pragma once

#include <fuse_lowlevel.h>

#include "fs/ops/tx_view.h"

namespace ktmfs::fs::txops {

void Lookup(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name);
void Getattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode);
// `by_handle`: through a handle opened inside the transaction.
void Setattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode,
             const struct stat* attr, int to_set, bool by_handle = false);
// Clears in the view the set-id bits a write (truncate, O_TRUNC, fallocate) by the caller of
// `req` drops (see fs/ops/setid.h), and has the kernel forget the node's attributes if it did; the
// commit carries the change like any chmod.
int DropSetidForWrite(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode);
void Readlink(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode);
// mknod (regular files and special files), mkdir and symlink.
void Make(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
          mode_t mode, dev_t rdev, const char* link_target);
void Link(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, Inode* parent,
          const char* name);
void Remove(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
            bool dir);
void Rename(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
            Inode* newparent, const char* newname, unsigned flags);

// Files opened inside a transaction carry it (TxHandle) for every later request on them. Both
// answer the request and return whether the kernel got the handle (counted in
// Inode::open_handles: Create counts it, Open's caller did already).
bool Open(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, fuse_file_info* fi);
bool Create(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
            mode_t mode, fuse_file_info* fi);
bool IsTxHandle(const fuse_file_info* fi);
void Read(fuse_req_t req, Filesystem& fs, size_t size, off_t off, fuse_file_info* fi);
void Write(fuse_req_t req, Filesystem& fs, fuse_bufvec* in, off_t off, fuse_file_info* fi);
// Ends a handle; the caller replies (after its own bookkeeping: the reply lets the kernel
// forget the node).
void Release(Filesystem& fs, fuse_file_info* fi);
void Fsync(fuse_req_t req, Filesystem& fs, int datasync, fuse_file_info* fi);
void Fallocate(fuse_req_t req, Filesystem& fs, int mode, off_t off, off_t len, fuse_file_info* fi);
void Lseek(fuse_req_t req, Filesystem& fs, off_t off, int whence, fuse_file_info* fi);
// setattr through a handle opened inside the transaction (ftruncate, fchmod, ...).
void SetattrByHandle(fuse_req_t req, Filesystem& fs, const struct stat* attr, int to_set,
                     fuse_file_info* fi);
void GetattrByHandle(fuse_req_t req, Filesystem& fs, fuse_file_info* fi);

void Getxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              size_t size);
void Listxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, size_t size);
void Setxattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              const char* value, size_t size, int flags);
void Removexattr(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name);

// A directory listing of the view, read whole at opendir.
struct TxDirEntry {
  std::string name;
  ino_t ino;
  mode_t type;
};
int ListView(Filesystem& fs, const TxGuard& tx, Inode* dir, std::vector<TxDirEntry>* out);

// For requests outside any transaction: EBUSY if a transaction holds what the change needs,
// by the rule of fs/TRANSACTIONS.md ("Conflicts"): the object or the name itself, a name above
// it (a directory the transaction removes or moves), or, for a name, anything below it (their
// apply finds what they changed by path).
int CheckNotHeld(Filesystem& fs, const Inode* inode);
int CheckEntryNotHeld(Filesystem& fs, const Inode* parent, const char* name);
// Both names.
int CheckRenameNotHeld(Filesystem& fs, const Inode* parent, const char* name,
                       const Inode* newparent, const char* newname);

}  // namespace ktmfs::fs::txops

// The FUSE operations as a task inside a transaction gets them: each reads the transaction's
// view and records its change (locks, staging, an op record) instead of touching the backing
// directory. The adapter (adapter.h) routes a request here when Classify says kTx, and sends
// the Reply each function returns.
#pragma once

#include <fuse_lowlevel.h>

#include "fs/fuse/reply.h"
#include "fs/ops/tx_view.h"

namespace ktmfs::fs::txops {

Reply Lookup(Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name);
Reply Getattr(Filesystem& fs, const TxGuard& tx, Inode* inode);
// `by_handle`: through a handle opened inside the transaction.
Reply Setattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
              const struct stat* attr, int to_set, bool by_handle = false);
// Clears in the view the set-id bits a write (truncate, O_TRUNC, fallocate) by `caller` drops
// (see fs/ops/setid.h), and has the kernel forget the node's attributes if it did; the commit
// carries the change like any chmod.
int DropSetidForWrite(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode);
Reply Readlink(Filesystem& fs, const TxGuard& tx, Inode* inode);
// mknod (regular files and special files), mkdir and symlink.
Reply Make(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
           mode_t mode, dev_t rdev, const char* link_target);
Reply Link(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode, Inode* parent,
           const char* name);
Reply Remove(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, bool dir);
Reply Rename(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, Inode* newparent, const char* newname, unsigned flags);

// Files opened inside a transaction carry it (TxHandle) for every later request on them. Open
// and Create reply with the handle; Open's caller has counted it in Inode::open_handles, Create
// counts it itself and takes the count back if the kernel refuses the reply.
Reply Open(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
           fuse_file_info* fi);
Reply Create(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, mode_t mode, fuse_file_info* fi);
bool IsTxHandle(const fuse_file_info* fi);
// The transaction a handle belongs to, entered; empty once it has ended. The requests below get
// it from the adapter (ServeTxHandle), which keeps it entered until their reply is sent. A
// handle used is no longer counted as flushed (Flushed).
TxGuard EnterByHandle(Filesystem& fs, const fuse_file_info* fi);
// A close(2) flushed the handle: counted in its node's Inode::flushed_handles until the handle
// is used again or released.
void Flushed(const fuse_file_info* fi);
// The node a transaction's file handle was opened on.
Inode* HandleInode(const fuse_file_info* fi);
Reply Read(Filesystem& fs, const TxGuard& tx, size_t size, off_t off, fuse_file_info* fi);
Reply Write(const Caller& caller, Filesystem& fs, const TxGuard& tx, fuse_bufvec* in, off_t off,
            fuse_file_info* fi);
// Ends a handle; the caller replies (after its own bookkeeping: the reply lets the kernel
// forget the node). Returns whether it was counted as flushed, which the caller takes back
// after its open count (Inode::open_handles): a commit waiting for the release never sees the
// handle as open and unflushed.
bool Release(Filesystem& fs, fuse_file_info* fi);
Reply Fsync(Filesystem& fs, const TxGuard& tx, int datasync, fuse_file_info* fi);
Reply Fallocate(const Caller& caller, Filesystem& fs, const TxGuard& tx, int mode, off_t off,
                off_t len, fuse_file_info* fi);
Reply Lseek(Filesystem& fs, const TxGuard& tx, off_t off, int whence, fuse_file_info* fi);
// setattr through a handle opened inside the transaction (ftruncate, fchmod, ...).
Reply SetattrByHandle(const Caller& caller, Filesystem& fs, const TxGuard& tx,
                      const struct stat* attr, int to_set, fuse_file_info* fi);
Reply GetattrByHandle(Filesystem& fs, const TxGuard& tx, fuse_file_info* fi);

Reply Getxattr(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name, size_t size);
Reply Listxattr(Filesystem& fs, const TxGuard& tx, Inode* inode, size_t size);
Reply Setxattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
               const char* name, const char* value, size_t size, int flags);
Reply Removexattr(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
                  const char* name);

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

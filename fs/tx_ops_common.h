// Helpers shared by the transactional operations (tx_ops_*.cc).
#pragma once

#include <string>
#include <vector>

#include "fs/tx_ops.h"

namespace ktmfs::fs::txops {

// A Status as a FUSE errno (EIO when it has none).
int Errno(const Status& s);

// Where a node is in the transaction's view.
Result<std::string> NodePath(Filesystem& fs, const TxGuard& tx, Inode* inode);

struct ParentViewInfo {
  std::string view;
};
// The view path of the directory a name operation works in; EPERM for the virtual root and for
// the state directory's name.
Result<ParentViewInfo> ParentView(Filesystem& fs, const TxGuard& tx, Inode* parent,
                                  const char* name);

// Locks (EBUSY if another transaction holds them). Objects the transaction created need none.
int LockObject(Filesystem& fs, const TxGuard& tx, const Inode* inode);
int LockObjectId(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object);
int LockEntry(Filesystem& fs, const TxGuard& tx, const Inode* parent, const char* name);
// Moving or removing an existing directory would move objects other transactions hold (their
// apply finds them by path): refused while another transaction holds anything in the source.
int CheckDirMove(Filesystem& fs, const TxGuard& tx, int source);

void AddLinks(const TxGuard& tx, int source, const fstx::ObjectId& object, int delta);
// The transaction changed names in `parent`: its attributes and entries are served with zero
// timeouts to everyone until the transaction ends.
void MarkParent(Filesystem& fs, const TxGuard& tx, Inode* parent);
// Asks the kernel to forget a cached entry once the current request has been answered.
void InvalidateEntryLater(Filesystem& fs, Inode* parent, const char* name);

// An existing file's staged contents, made on first use.
Result<fstx::StagedFile*> StagedFor(Filesystem& fs, const TxGuard& tx, Inode* inode);
// Sets a regular file's size in the view.
int Truncate(Filesystem& fs, const TxGuard& tx, Inode* inode, const std::string& path,
             uint64_t size);
int ListViewPath(Filesystem& fs, const TxGuard& tx, int source, const std::string& view,
                 std::vector<TxDirEntry>* out);

// Makes a new object (see Make); on success *view is the parent's view path, *number the new
// object's number.
int MakeIn(fuse_req_t req, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
           mode_t mode, dev_t rdev, const char* link_target, std::string* view, uint64_t* number);

int SetattrIn(Filesystem& fs, const TxGuard& tx, Inode* inode, const struct stat* attr, int to_set);

}  // namespace ktmfs::fs::txops

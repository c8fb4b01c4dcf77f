// How requests from inside a transaction see and change the filesystem: the transaction's view
// (its overlay over the backing directory) resolved from node ids, attributes as the view has
// them, and the locks and op records each change needs. The adapter (adapter.h) routes by Classify,
// and the transaction's operations (tx_ops.h) use the rest (fs/TRANSACTIONS.md has the model).
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <optional>
#include <string>
#include <vector>

#include "fs/ops/filesystem.h"
#include "fs/service/tx_service.h"
#include "fs/tx/overlay.h"

namespace ktmfs::fs {

// What a request on a node means for its caller.
enum class Route {
  kCommitted,  // plain passthrough on the node's descriptor
  kTx,         // served from the caller's transaction view
  kStale,      // ESTALE: the caller's path walk must look the name up again (see Classify)
};

// Requests by a task inside a transaction reach committed non-directory nodes only through
// dentries cached before (or by others); ESTALE makes the VFS walk the path again with
// LOOKUP_REVAL, which asks LOOKUP and gets the transaction's own version node. Version nodes of a
// live transaction are refused the same way to everyone else; once it ended they act as plain
// nodes of the object.
Route Classify(Filesystem& fs, const TxGuard& tx, Inode* inode);

// The same for requests that only read: a committed node the transaction has not changed
// answers as committed (an open file's fstat arrives without its file).
Route ClassifyRead(Filesystem& fs, const TxGuard& tx, Inode* inode);

// The object a node stands for, as op records name it.
fstx::ObjectId ObjectOf(const Inode* inode);
// Whether `inode` is a transaction's version of a regular file it created: the file's staged
// file is then its whole content, size and modification time included.
bool IsCreatedFile(const Inode* inode);

// The view path of a directory node for the transaction; ENOENT if it is not in its view.
Result<std::string> ViewDir(Filesystem& fs, const TxGuard& tx, Inode* dir);
// The path of a committed object relative to its source root (by its descriptor).
Result<std::string> BackingPath(Filesystem& fs, const Inode* inode);
// The names lookups found a non-directory by (Inode::LookedUpAs) that still name it.
std::vector<std::string> NamesStillNaming(Filesystem& fs, const Inode* inode);

// Opens `rel` below the source root without following any symlink on the way (O_PATH unless
// `flags` says otherwise).
int OpenBeneath(Filesystem& fs, int source, const std::string& rel, int flags);

// What a name in a view directory is.
struct ViewEntry {
  bool exists = false;
  fstx::ObjectId object{};
  bool is_new = false;
  std::string backing_path{};  // existing objects
  struct stat st {};           // of the backing or staged object
};
Result<ViewEntry> LookupView(Filesystem& fs, const TxGuard& tx, int source, const std::string& dir,
                             const std::string& name);

// Looks `name` up in view directory `dir` and counts one lookup of the node it gives (the
// shared committed node for existing directories, a version node otherwise); 0 or an errno.
int TxLookupEntry(Filesystem& fs, const TxGuard& tx, int source, const std::string& dir,
                  const std::string& name, fuse_entry_param* e);

// The attributes the transaction sees for a node.
int TxStat(Filesystem& fs, const TxGuard& tx, Inode* inode, struct stat* st);
// How long the kernel may keep what TxStat gave for `inode`, which it keeps once for every
// caller of the node.
double ViewAttrTimeout(Filesystem& fs, const TxGuard& tx, const Inode* inode);

// The transaction's overlay in `source`, where an op it logged there made it (TouchTimes,
// AddLinks, SetMtime rely on that): asserts so; nullptr, with nothing to stamp, only if that
// rule was broken.
fstx::TxOverlay* OverlayOfLogged(Filesystem& fs, const TxGuard& tx, int source);

// Stamps the times the view shows for `object`, which the transaction changed now
// (TxOverlay::Touch): after an op logged in `source`, which made the overlay there.
void TouchTimes(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                bool data);

// The transaction's staging directory descriptor path for new objects (its TxStaging::dir()).
Result<std::string> StagingDir(Filesystem& fs, const TxGuard& tx, int source);

std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace ktmfs::fs

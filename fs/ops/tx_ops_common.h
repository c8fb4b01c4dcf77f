// Helpers shared by the transactional operations (tx_ops_*.cc).
#pragma once

#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fs/fuse/reply.h"
#include "fs/ops/permission.h"
#include "fs/ops/posix_acl.h"
#include "fs/ops/tx_ops.h"
#include "fs/tx/lock_table.h"

namespace ktmfs::fs::txops {

// A Status as a FUSE errno (EIO when it has none).
int Errno(const Status& s);

// A read of up to `size` bytes at `off` from a source that fills a span (a staged file, or a
// file served from staging while apply copies it), as the reply.
template <class Source>
Reply ReadInto(const Source& source, size_t size, off_t off) {
  std::vector<char> buf(size);
  auto n = source.Read(static_cast<uint64_t>(off), std::as_writable_bytes(std::span(buf)));
  if (!n.ok()) return Reply::Error(Errno(n.status()));
  buf.resize(*n);
  return Reply::Bytes(std::move(buf));
}

// The xattr names of the object at `path` (a /proc path of its descriptor) that are shown,
// control names left out, or an errno.
int ShownXattrNames(const char* path, std::vector<std::string>* out);
// A listxattr reply of `names` for a caller who asked for `size` bytes (0: only the size).
Reply XattrNamesReply(const std::vector<std::string>& names, size_t size);

// Where a node is in the transaction's view.
Result<std::string> NodePath(Filesystem& fs, const TxGuard& tx, Inode* inode);

struct ParentViewInfo {
  std::string view;
};
// The view path of the directory a name operation works in; EPERM for the virtual root and for
// the state directory's name.
Result<ParentViewInfo> ParentView(Filesystem& fs, const TxGuard& tx, Inode* parent,
                                  const char* name);

// `caller` for the checks of fs/ops/permission.h that come before every lock: a transaction
// takes no lock on what its caller may not change. Its groups and capabilities are read
// (fuse_req_getgroups, /proc/PID/status) only if a check needs them, before the reply.
Requester RequesterOf(const Caller& caller);
// `st` (an object's backing or staged attributes, as LookupView gives them) with the mode and
// owner the transaction gave the object.
struct stat ViewAttributes(Filesystem& fs, const TxGuard& tx, int source,
                           const fstx::ObjectId& object, struct stat st);
// Whether fs.protected_hardlinks is set (link(2) then needs ownership or read-write access).
bool ProtectedHardlinks();

// The locks a change takes one after another before it logs: given back when it returns
// before Keep(), so a change refused halfway through them (a rename whose target another
// transaction holds), or then by its owner's cap or the log, leaves its transaction holding
// nothing it took (ktmfs-tx(7): a change that fails holds nothing). Keep() comes once the
// change is logged.
class TakenLocks {
 public:
  TakenLocks(Filesystem& fs, const TxGuard& tx, int source);
  ~TakenLocks();  // GiveBack() unless kept
  TakenLocks(const TakenLocks&) = delete;
  TakenLocks& operator=(const TakenLocks&) = delete;
  void Keep() { done_ = true; }
  // The change stages contents of the existing file `inode`. If it gives the file's lock back,
  // the transaction held none before it, so had changed nothing of the file: whatever is
  // staged for it is this change's, and goes too (TxStaging::Drop). The view reads the
  // committed file again, and a commit finds nothing of the change.
  void Stages(const Inode* inode);
  // Gives back now what the change took. Whether that included the lock of the file Stages
  // named, whose staged contents are then gone: if not, the transaction changed the file before
  // (or another of its changes took the lock meanwhile), and those contents stay.
  bool GiveBack();

 private:
  Filesystem& fs_;
  const TxGuard& tx_;
  const int source_;
  fstx::LockTable::Journal journal_;
  const Inode* staged_ = nullptr;
  bool done_ = false;
};

// Locks (EBUSY if another transaction holds them). Objects the transaction created need none.
// Every caller checks the requester's permission first (fs/ops/permission.h).
int LockObject(Filesystem& fs, const TxGuard& tx, const Inode* inode);
int LockObjectId(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                 const std::string& backing_path);
// Also refuses a name in another mount inside the backing directory (EXDEV), or a mount point's
// own name (EBUSY): apply could not rename it.
int LockEntry(Filesystem& fs, const TxGuard& tx, const Inode* parent, const char* name);
// EXDEV if the existing `object` is inside another mount than its backing directory's: a link
// to it made by apply would cross mounts.
int ObjectOnBackingMount(Filesystem& fs, const TxGuard& tx, const Inode* object);
// Moving or removing an existing directory would move objects other transactions hold (their
// apply finds them by path): refused while another transaction holds anything below it.
int CheckDirMove(Filesystem& fs, const TxGuard& tx, int source, const std::string& backing_dir);
// EBUSY if `object` is a directory on the way to the state directory (Layout::IsGuardedDir):
// the transaction's view does not show the state directory in it, so it looks empty, and apply
// could neither remove it nor move it without moving the state directory.
int CheckNotGuarded(Filesystem& fs, const fstx::ObjectId& object);

// The view's link count of `object` changes by `delta` (TxOverlay::AddLinks); after an op logged
// in `source`.
void AddLinks(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
              int delta);
// Stamps the ctime of `object` in the view for a change that logged nothing (chown(f, -1, -1),
// an ACL equal to the mode): makes the overlay, without enlisting the RM
// (FsResourceManager::OverlayFor), if no op made it, and charges a new entry to the owner, as
// an op is charged for its own. 0, or ENOSPC past the owner's memory cap.
int StampUnlogged(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object);
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
// The same inside a change that has locked the file through `taken`, and keeps the lock once
// the new size is logged.
int TruncateLocked(Filesystem& fs, const TxGuard& tx, Inode* inode, const std::string& path,
                   uint64_t size, TakenLocks& taken);
int ListViewPath(Filesystem& fs, const TxGuard& tx, int source, const std::string& view,
                 std::vector<TxDirEntry>* out);

// Makes a new object (see Make); on success *view is the parent's view path, *number the new
// object's number.
int MakeIn(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent, const char* name,
           mode_t mode, dev_t rdev, const char* link_target, std::string* view, uint64_t* number);

// An object's extended attribute `name` as the transaction sees it (nullopt: none), or an errno.
int ViewXattr(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name,
              std::optional<std::string>* out);
// The object's ACL of that kind (kAclAccessXattr or kAclDefaultXattr) as the transaction sees
// it; nullopt when it has none, or none that can be read (the kernel's own check has run on
// the same value already).
std::optional<PosixAcl> ViewAcl(Filesystem& fs, const TxGuard& tx, Inode* inode, const char* name);
// The access ACL of the object a view name leads to.
std::optional<PosixAcl> ViewAcl(Filesystem& fs, const TxGuard& tx, int source,
                                const ViewEntry& entry);
// Logs setting `name` to `value` on an object (removing it when `value` is nullopt), with the
// value counted against the caller's memory.
Status LogXattr(Filesystem& fs, const TxGuard& tx, int source, const fstx::ObjectId& object,
                const std::string& path, const char* name, const std::optional<std::string>& value);

// `by_handle`: through a descriptor opened inside the transaction (ftruncate needs no write
// permission on the file then, as the open checked it).
int SetattrIn(Filesystem& fs, const TxGuard& tx, const Requester& who, Inode* inode,
              const struct stat* attr, int to_set, bool by_handle);

}  // namespace ktmfs::fs::txops

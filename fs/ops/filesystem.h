// The daemon's shared state (options, layout, inode table) and the helpers every group of
// operations uses: resolving node ids, looking names up, and the rules for the virtual root
// and hidden entries. The operations themselves live in ops_*.cc, grouped by kind.
#pragma once

#include <errno.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <ctime>
#include <shared_mutex>
#include <string>
#include <vector>

#include "fs/control/failure_reasons.h"
#include "fs/fuse/caller.h"
#include "fs/fuse/inode_table.h"
#include "fs/fuse/reply.h"
#include "fs/mount/layout.h"
#include "fs/mount/mount_state.h"
#include "fs/mount/options.h"
#include "fs/ops/passthrough.h"
#include "fs/service/tx_service.h"

namespace ktmfs::fs {

class Invalidator;

// The visibility gate's key for what `inode` reaches: its backing object.
fstx::VisibilityGate::Key GateKey(const Inode* inode);

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
  Inode* SourceRoot(int i) const { return source_roots_[static_cast<size_t>(i)]; }

  // Transactions (null until the service has started).
  void SetTxService(TxService* t) { txs_ = t; }
  void SetInvalidator(Invalidator* i) { invalidator_ = i; }
  // A second one, for the pages direct writes make stale (WriteDone): its thread may wait for
  // a page lock held until a request is answered, and must hold up nothing else meanwhile.
  void SetDirectWriteInvalidator(Invalidator* i) { direct_write_invalidator_ = i; }
  // The kernel caches around a transaction's end (see TxService::SetBeforeEnd, SetOnEnded).
  void BeforeTxEnd(const Guid& tx, bool commit);
  void OnTxEnded(const EndedTx& e);
  // A commit of `tx` let readers in while it still copies the data of `objects` (of source
  // `source`) in place, serving them from staging (TxService::SetOnLetIn).
  void OnLetIn(const Guid& tx, int source, const std::vector<fstx::ObjectId>& objects);
  Invalidator* invalidator() const { return invalidator_; }
  Invalidator* direct_write_invalidator() const { return direct_write_invalidator_; }
  TxService* txs() const { return txs_; }
  // The last failed control request's message per caller (KTMFS_IOC_REASON).
  FailureReasons& reasons() { return reasons_; }
  // Open files the kernel serves itself (fs/ops/passthrough.h).
  PassthroughFiles& passthrough() { return passthrough_; }
  // Whether the mount is read-only now (ReadOnlyWatch: kept until the mount table changes).
  Result<bool> MountIsReadOnly() { return read_only_.Get(); }
  // The caller's transaction, held live for this request; empty if none.
  TxGuard EnterTx(fuse_req_t req);
  // Held by a request that reads `inode` in the committed view outside transactions, while it
  // reads it: it then sees a commit's changes to the object whole or not at all, and waits only
  // for an apply that changes this object (fs/tx/visibility_gate.h). Empty when there is no
  // transaction service.
  fstx::VisibilityGate::Pass ReadingCommitted(const Inode* inode) const;
  // The same for a reader that can read `inode` from what ServedFrom gives: it does not wait for
  // an apply that writes the file's data in place after letting readers in.
  fstx::VisibilityGate::Pass ReadingCommittedOrServed(const Inode* inode) const;
  // What a reader holding `pass` reads `inode` from while apply writes its data in place (see
  // fstx::ServedObject); null: the object itself.
  const fstx::ServedObject* ServedFrom(const fstx::VisibilityGate::Pass& pass,
                                       const Inode* inode) const;
  // For what a lookup found under a pass on its parent alone: counts the child in the pass too,
  // and reads its attributes again into `e` if an apply may have changed them meanwhile (or
  // takes them from what the child is served from, ReadingCommittedOrServed). False
  // if an apply is changing the child (`*closed` names it): the caller gives the lookup back,
  // and a lookup lets go of its pass, waits (AwaitApply) and looks the name up again, parent
  // first, so its answer is wholly from before the commit or wholly from after it.
  bool ReadingCommittedEntry(fstx::VisibilityGate::Pass& pass, fuse_entry_param* e,
                             fstx::VisibilityGate::Key* closed);
  void AwaitApply(fstx::VisibilityGate::Key key);
  // The same for a reader that can be served what it reads (ReadingCommittedEntry): also
  // returns once apply serves `key` to such readers.
  void AwaitApplyOrServed(fstx::VisibilityGate::Key key);
  // Held by a request inside a transaction while it reads `a` and `b` (either may be null):
  // empty unless a commit's apply still writes big files in place after letting readers in
  // (FsResourceManager::ApplyAndFinish), and then a pass on both, waiting while either is
  // among those files. The request holds the visibility lock shared, so no apply closes
  // anything while it runs. With `served`, the request reads what it reads of those files
  // through the pass (TxGuard::ReadThrough and ServedFrom), so it does not wait for those the
  // apply serves from staging.
  fstx::VisibilityGate::Pass ReadingInTx(const Inode* a, const Inode* b = nullptr,
                                         bool served = false) const;
  // What a lookup inside a transaction, holding `pass` from ReadingInTx and reading through it,
  // does with the `child` it found, which it read before the pass counted it:
  // - kAnswer: the pass counts it now, and it was not being written when read;
  // - kLookAgain: the pass counts it now, but an apply may have been writing it when read:
  //   the next look reads it through the pass (served, or as apply left it);
  // - kWait: an apply is writing it and does not serve it. The caller lets go of the pass,
  //   waits (AwaitApplyOrServed) and looks up again with a new pass: a pass must not wait
  //   while it counts a file an apply serves, whose hold waits for its readers before it opens.
  enum class TxLook { kAnswer, kLookAgain, kWait };
  TxLook LookAgainInTx(fstx::VisibilityGate::Pass& pass, const Inode* child) const;
  // Timeouts for what the kernel caches about a committed object: zero while a transaction
  // changes it (its entries or attributes may then differ between callers).
  double AttrTimeout(const Inode* inode) const;
  double EntryTimeout(const Inode* inode) const;

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
  // Whether `name` in `parent` is a directory on the way to a hidden entry (Layout::IsGuardedDir),
  // which cannot be moved, removed or replaced (EBUSY). One fstatat, only when there is one.
  bool IsGuardedName(const Inode* parent, const char* name) const;

 private:
  void VirtualRootAttr(struct stat* st) const;

  Options options_;
  Layout layout_;
  InodeTable inodes_;
  std::vector<Inode*> source_roots_;
  TxService* txs_ = nullptr;
  Invalidator* invalidator_ = nullptr;
  Invalidator* direct_write_invalidator_ = nullptr;
  FailureReasons reasons_;
  PassthroughFiles passthrough_;
  ReadOnlyWatch read_only_;
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

// What a write of N bytes at OFF through FI replies. An O_DIRECT write first drops the range from
// the page cache: the kernel does that around a synchronous direct write, but not once an
// asynchronous one (AIO, io_uring) completes, so pages a buffered reader cached while the write
// was in flight would outlive it (fstests generic/451). The drop runs on a thread of its own,
// and the reply waits for it only a while: the flags are the file's, so a buffered write on a
// file someone made O_DIRECT with fcntl arrives with its pages locked until this reply, and a
// reader's readahead may hold a page whose READ waits for a free worker (or, with -s, for this
// one).
Reply WriteDone(Filesystem& fs, fuse_ino_t node, const fuse_file_info* fi, off_t off, size_t n);

// Before a write through `fi` to the committed file open as the backing descriptor `fd`:
// clears the set-id bits the write drops, as a local filesystem would, and has the kernel
// forget the attributes of `node` if it did. The kernel's own clearing is not enough: with
// HANDLE_KILLPRIV_V2 it leaves clearing to the daemon once it has seen the file without set-id
// bits (S_NOSEC), and without it, it decides from the mode it cached, which a commit may have
// changed since (it is fetched again only when someone looks). A writer the kernel vouches has
// CAP_FSETID (fs/fuse/kernel_channel.h) and its own write-back keep them. 0 or an errno.
int DropSetidOnWrite(const Caller& who, Filesystem& fs, fuse_ino_t node, int fd,
                     const fuse_file_info* fi);

// Registers every operation group.
void AddEntryOps(fuse_lowlevel_ops* ops);
void AddFileOps(fuse_lowlevel_ops* ops);
void AddDirOps(fuse_lowlevel_ops* ops);
// Once the session is gone: frees the directory handles the kernel never released.
void FreeUnreleasedDirHandles();
void AddXattrOps(fuse_lowlevel_ops* ops);
void AddSessionOps(fuse_lowlevel_ops* ops);
void AddControlOps(fuse_lowlevel_ops* ops);

}  // namespace ktmfs::fs

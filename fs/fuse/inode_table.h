// The inode table: one Inode per backing object, keyed by its (dev, ino) and reached through an
// O_PATH descriptor, so a name renamed behind the kernel's back still reaches the same object
// and hard links share one node. The kernel's node id is the Inode's address (the root is
// FUSE_ROOT_ID); lookup counts follow the kernel's LOOKUP/FORGET protocol.
//
// The kernel decides how many nodes it keeps, and anyone may make it keep more (an `ls -l` of a
// big directory, a transaction creating files). A descriptor held per node would let that
// exhaust the daemon's file limit for every user, so the table keeps at most a budget of them
// open (by default half of what its soft RLIMIT_NOFILE leaves after the descriptors held
// elsewhere, see SetDescriptorsHeldElsewhere) and closes the least recently used beyond it.
// A closed node keeps its object's file handle (ObjectHandle) and opens it again on its next
// use. Where handles cannot be opened (no CAP_DAC_READ_SEARCH, a filesystem without them) a
// node keeps its descriptor for life, as roots always do.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fs/tx/object_handle.h"
#include "fs/tx/records.h"
#include "fs/tx/replacement.h"
#include "log/owned_mutex.h"
#include "src/guid.h"

namespace ktmfs::fs {

class InodeTable;

// Where a node keeps its descriptor. Shared with every NodeFd in use: a request replies before
// its NodeFd goes, and the kernel may then forget the node, so the descriptor and its use
// count outlive the Inode until the last user is done (which closes it).
struct NodeFdSlot {
  std::mutex mu;  // guards fd and users of a node the table may close
  int fd = -1;
  uint32_t users = 0;
  ~NodeFdSlot();
};

// A node's descriptor, kept open while this lives (the table closes no descriptor in use).
// get() is -1 when the node's object could not be opened again: it is gone (ESTALE) or the
// daemon is out of descriptors (EMFILE); errno says which.
class NodeFd {
 public:
  NodeFd() = default;
  NodeFd(std::shared_ptr<NodeFdSlot> counted, int fd) : counted_(std::move(counted)), fd_(fd) {}
  NodeFd(NodeFd&& o) noexcept = default;
  NodeFd& operator=(NodeFd&&) = delete;
  ~NodeFd();
  int get() const { return fd_; }

 private:
  std::shared_ptr<NodeFdSlot> counted_;  // whose use count this holds; null: never closed
  int fd_ = -1;
};

struct Inode {
  // kTxVersion: one transaction's version of an object (see fs/TRANSACTIONS.md, "node ids"):
  // its own node id, so the kernel keeps its pages and attributes apart from everyone else's.
  // Its descriptor then holds the backing object (existing objects) or the staged one (new
  // objects).
  enum class Kind { kBacking, kVirtualRoot, kTxVersion };
  Kind kind = Kind::kBacking;
  // The object's descriptor (O_PATH, O_NOFOLLOW; -1 for the virtual root). Use Fd(): for a node
  // with a handle the table may close it while unused.
  const std::shared_ptr<NodeFdSlot> fd_slot = std::make_shared<NodeFdSlot>();
  NodeFd Fd() const;
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;  // S_IFMT bits, fixed for the object's life
  uint64_t generation = 0;
  uint64_t nlookup = 0;   // guarded by the table's mutex
  bool pinned = false;    // a root: never dropped by FORGET
  int source_index = -1;  // the source this object belongs to

  // The kernel asks for security.capability before every write(2) to a FUSE file (see
  // committed_xattr.cc). Its absence is known while caps_absent_at == xattr_gen + 1; every xattr
  // change to the object bumps xattr_gen before and after, so an answer read while a change
  // ran is never kept.
  std::atomic<uint64_t> xattr_gen{0};
  std::atomic<uint64_t> caps_absent_at{0};
  void XattrsChanging() { xattr_gen.fetch_add(1, std::memory_order_acq_rel); }

  // File handles open on the node (counted from the start of an open until its release): a
  // version node is handed to a later transaction only while none is open (see
  // InodeTable::AcquireTx).
  std::atomic<uint32_t> open_handles{0};
  // Of those, handles a close(2) has flushed (FLUSH) and that have not been used since
  // (version nodes only): nearly always closed, their RELEASE still on its way. The kernel sends
  // RELEASE in the background, so a commit made right after the close can reach the daemon
  // first (over FUSE's io_uring, on another queue). A handle duplicated before the close is
  // flushed too and still open.
  std::atomic<uint32_t> flushed_handles{0};
  // Of the handles open on the node, those open for writing, and those an exec(2) opened (the
  // program runs from the file until it exits). A commit must not
  // replace a file under a writer (what it writes after the commit would go to the file left
  // in staging: ReplaceWhen), and a transaction may not write a running program (ETXTBSY, as
  // natively: IsExecuting).
  std::atomic<uint32_t> write_handles{0};
  std::atomic<uint32_t> exec_handles{0};

  // Backing paths lookups found this non-directory at while transactions held locks (the
  // newest last, a few at most). The descriptor's own path is the name it was first opened by,
  // which may since have been removed or be one of several links; the plain conflict check
  // (CheckNotHeld) must also see the names the kernel reached it by.
  void NoteLookedUpAs(const std::string& path);
  std::vector<std::string> LookedUpAs() const;

  // kTxVersion only. `tx` changes when the node is handed to a later transaction: read it with
  // bound_tx() outside the table.
  Guid tx;
  fstx::ObjectId object;
  bool tx_ended = false;  // guarded by the table's mutex
  mutable std::mutex tx_mu;
  mutable std::mutex names_mu;
  std::vector<std::string> looked_up_as;  // guarded by names_mu
  Guid bound_tx() const {
    std::lock_guard l(tx_mu);
    return tx;
  }

  // Set by the table for a node whose descriptor it may close (see InodeTable): the handle to
  // open it again by, and a descriptor on its filesystem. The table's mutex, when taken with
  // fd_slot's, comes first.
  InodeTable* table = nullptr;
  std::optional<fstx::ObjectHandle> handle;
  int mount_fd = -1;
  mutable std::atomic<bool> fd_used{false};  // since the table last looked (second chance)
  Inode* lru_prev = nullptr;  // the table's list of closable open descriptors (its mutex)
  Inode* lru_next = nullptr;
  bool listed = false;

  bool is_virtual_root() const { return kind == Kind::kVirtualRoot; }
  bool is_tx_version() const { return kind == Kind::kTxVersion; }
};

class InodeTable {
 public:
  InodeTable() = default;
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  // Installs a pinned root (a source root or the virtual root) owned by the table.
  Inode* AddPinned(std::unique_ptr<Inode> inode);
  // From now on nodes on the mount `mount_fd` is on (`mount_id`) get handles, and their
  // descriptors may be closed beyond the budget: `budget` descriptors, or 0 for the default
  // (see the top of this file; read again as the limit changes). Only once HandlesWork() said yes;
  // the table owns `mount_fd` (not O_PATH, which open_by_handle_at refuses).
  void CloseUnusedDescriptors(int mount_id, int mount_fd, size_t budget);
  ~InodeTable();
  // How many closable descriptors are open now (tests, the daemon's report).
  size_t OpenDescriptors() const;
  // How many descriptors the daemon holds for other reasons that grow with use (transactions'
  // changed files): the default budget is half of what they leave of the file limit.
  void SetDescriptorsHeldElsewhere(std::function<uint64_t()> held);
  // Runs `open` (which returns a descriptor, or -1 with errno); when the daemon is out of
  // descriptors (EMFILE, ENFILE: other descriptors it holds grew, or its limit was lowered),
  // closes half of the closable ones not in use and runs it once more.
  int OpenMakingRoom(const std::function<int()>& open);
  void SetRoot(Inode* root) { root_ = root; }
  Inode* root() const { return root_; }

  // Finds or adds the object described by `st`; takes ownership of `fd` (closes it if the
  // object is already known) and counts one lookup.
  Inode* Acquire(int fd, const struct stat& st, int source_index);
  // The known inode of the object `st` describes, with one more lookup counted; null when the
  // table has none (the caller then opens the object and calls Acquire). A known (dev, ino)
  // always names the object its descriptor holds open, so the number cannot have been reused.
  Inode* AcquireKnown(const struct stat& st);
  // Finds or adds transaction `tx`'s version of `object` (see Inode::kTxVersion); takes
  // ownership of `fd` like Acquire and counts one lookup. `view_path` is where the transaction
  // sees it now.
  //
  // A file (not a directory) the kernel still knows by the version node of a transaction that
  // has ended (MarkTxEnded) with no handle open on it is handed over to `tx` instead of getting
  // a new node: the kernel's dentry then still names the right node, and its path walk needs
  // one lookup instead of a lookup, a forget and a second lookup. `*handed_over` tells the
  // caller, which must then have the kernel drop the node's pages and attributes (they were the
  // earlier transaction's view).
  Inode* AcquireTx(const Guid& tx, const fstx::ObjectId& object, int fd, const struct stat& st,
                   int source_index, const std::string& view_path, bool* handed_over = nullptr);
  // The transaction has ended, and the kernel has been told to drop its version nodes' pages
  // and attributes: they may be handed to later transactions.
  void MarkTxEnded(const Guid& tx);
  // Where the transaction sees a version node now ("" for others).
  std::string ViewPath(const Inode* inode) const;
  // The transaction renamed `from` to `to` (or exchanged them): its nodes follow.
  void MoveViewPaths(const Guid& tx, int source_index, const std::string& from,
                     const std::string& to, bool exchange);
  // Node ids of every version node of `tx`, and of the committed node of (dev, ino) if the
  // kernel knows it: what an ending transaction invalidates.
  std::vector<fuse_ino_t> VersionNodes(const Guid& tx) const;
  // Node ids of the version nodes other transactions than `tx` have of the object (dev, ino) of
  // source `source`, live or ended, whether they found it or created it: a commit of `tx` that
  // changed the object invalidates them too, or their pages and attributes from before it would
  // go on being read.
  std::vector<fuse_ino_t> OtherVersionNodes(const Guid& tx, int source, dev_t dev, ino_t ino) const;
  // When a commit of `tx` replaces object `id` of source `source` rather than write it in place
  // (FsRmOptions::replace_when): never while `tx` has a file open on it, or another node of it
  // (the committed one, another transaction's, live or ended) has one open for writing, whose
  // writes must keep reaching the committed file;
  // whenever rewritten whole if a node besides `tx`'s own knows it
  // (a committed node, or another transaction's version node, live or ended), since such a node
  // can hold a size or pages from before the commit; otherwise only where that saves copying
  // its data.
  fstx::ReplaceWhen ReplaceWhen(const Guid& tx, int source, const fstx::ObjectId& id) const;
  // Whether a program runs from the file (dev, ino) of source `source`: a node of it (the
  // committed one, or a transaction's, live or ended) has a handle an exec(2) opened.
  bool IsExecuting(int source, dev_t dev, ino_t ino) const;
  // Before a commit of `tx`: waits, at most `bound`, while one of its version nodes of an
  // existing object that `changed` says it changed, and that another node knows, has handles
  // open that all were flushed (Inode::flushed_handles), for their RELEASE. A file still open at
  // the commit is written in place (ReplaceWhen), which tears for readers whose kernel cached
  // its size; one whose last close(2) the commit merely overtook need not be. Returns how many
  // such nodes still have handles open.
  using ChangedBy = std::function<bool(int source, const fstx::ObjectId& id)>;
  size_t AwaitFlushedReleased(const Guid& tx, std::chrono::milliseconds bound,
                              const ChangedBy& changed);
  // A handle of a node was released or used again: wakes that wait to look again.
  void HandlesChanged();
  size_t ReleaseWaitersForTests() const;
  std::optional<fuse_ino_t> FindNode(dev_t dev, ino_t ino) const;
  // The committed node of (dev, ino) if the kernel knows it and it is a directory.
  std::optional<fuse_ino_t> FindDirectoryNode(dev_t dev, ino_t ino) const;
  // The committed node of (dev, ino), if any, told that its xattrs may have changed, and
  // whether it is a directory: all under the table's lock, since a FORGET may free the node as
  // soon as it is let go (the kernel drops a replaced file's node at once).
  struct Changed {
    fuse_ino_t node;
    bool dir;
  };
  std::optional<Changed> NoteChanged(dev_t dev, ino_t ino) const;
  // Opens the committed node's object (dev, ino) anew with `flags` (or the version node's, for a
  // file a transaction created), while the table keeps its descriptor from being closed: a new
  // descriptor, or -1 if the kernel knows no such node.
  int ReopenObject(dev_t dev, ino_t ino, int flags) const;
  // A node's descriptor was opened again (Inode::Fd): counts it, and closes others if that goes
  // past the budget.
  void Reopened(const Inode* inode);

  // The next lookup of (dev, ino) gets a new node; the current one lives on for whoever still
  // holds it (until forgotten). For a directory a commit moved: the kernel keeps one dentry per
  // directory node, and the old node's may still sit at the old name.
  void Retire(dev_t dev, ino_t ino);
  // Counts another lookup of a known inode (readdirplus of an already-held object).
  void Ref(Inode* inode, uint64_t n = 1);
  // FORGET: drops `n` lookups; frees the inode when none remain.
  void Forget(Inode* inode, uint64_t n);

  Inode* FromNodeId(fuse_ino_t id) const {
    return id == FUSE_ROOT_ID ? root_ : reinterpret_cast<Inode*>(static_cast<uintptr_t>(id));
  }
  fuse_ino_t NodeId(const Inode* inode) const {
    return inode == root_ ? FUSE_ROOT_ID
                          : static_cast<fuse_ino_t>(reinterpret_cast<uintptr_t>(inode));
  }
  size_t size() const;

 private:
  struct Key {
    dev_t dev;
    ino_t ino;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<uint64_t>()(k.ino * 1000003u ^ k.dev);
    }
  };
  // A counted, unregistered inode for the object `fd` holds (mu_ held).
  std::unique_ptr<Inode> NewInode(int fd, const struct stat& st, int source_index);
  // The descriptor cache, all with mu_ held. Whether a known node's object is still the one
  // its number names: its descriptor is open, or its handle opens again (and stays open).
  bool StillThere(Inode* inode);
  void List(Inode* inode);
  void Unlist(Inode* inode);
  size_t Budget() const;
  // Closes unused descriptors, least recently used first, until `target` are open or none is
  // left to close; `second_chance` passes over those used since the last look once.
  void TrimDescriptorsTo(size_t target, bool second_chance);
  void TrimDescriptors() { TrimDescriptorsTo(Budget(), true); }

  mutable OwnedMutex mu_;
  // AwaitFlushedReleased's wait; taken before mu_.
  std::mutex release_mu_;
  std::condition_variable released_;
  std::atomic<int> release_waiters_{0};
  // Whether a node besides `tx`'s own knows object `id` of `source`: a committed node, or
  // another transaction's version node, live or ended (mu_ held).
  bool KnownElsewhereLocked(const Guid& tx, int source, const fstx::ObjectId& id) const;
  // The source and object of each version node of `tx` whose open handles were all flushed,
  // of an existing object known elsewhere (mu_ held).
  std::vector<std::pair<int, fstx::ObjectId>> FlushedUnreleasedLocked(const Guid& tx) const;
  std::unordered_map<Key, std::unique_ptr<Inode>, KeyHash> by_key_;
  // By transaction, source and object: objects a transaction creates are numbered per source.
  using VersionKey = std::tuple<Guid, int, fstx::ObjectId>;
  std::map<VersionKey, std::unique_ptr<Inode>> versions_;
  // Version nodes of ended transactions that may be handed over, by source and object.
  std::multimap<std::pair<int, fstx::ObjectId>, Inode*> ended_versions_;
  // Every version node (in versions_) by source and the identity of its object: an object a
  // transaction created has the identity of the committed file once placed.
  std::multimap<std::tuple<int, dev_t, ino_t>, Inode*> object_versions_;
  void DropObjectVersion(Inode* v);  // mu_ held
  // The version nodes of (dev, ino) of `source` that belong to transactions other than `tx`
  // (mu_ held): what OtherVersionNodes invalidates and ReplaceWhen counts.
  std::vector<const Inode*> OtherVersionsLocked(const Guid& tx, int source, dev_t dev,
                                                ino_t ino) const;
  // Whether the committed node of (dev, ino), or a version node of it of a transaction other
  // than `tx` (any, for the nil id), has a handle of the kind `count` gives (write_handles,
  // exec_handles), mu_ held: what ReplaceWhen and IsExecuting ask.
  bool OtherNodeHasLocked(const Guid& tx, int source, dev_t dev, ino_t ino,
                          std::atomic<uint32_t> Inode::*count) const;
  std::unordered_map<const Inode*, std::string> view_paths_;
  std::unordered_map<const Inode*, std::unique_ptr<Inode>> retired_;
  std::unique_ptr<Inode> virtual_root_;
  Inode* root_ = nullptr;
  std::atomic<uint64_t> next_generation_{1};
  std::vector<std::pair<int, int>> handle_mounts_;  // mount id, descriptor on it
  size_t fixed_budget_ = 0;
  std::function<uint64_t()> held_elsewhere_;
  // Closable descriptors (nodes with handles whose descriptor is open), oldest first.
  Inode* lru_head_ = nullptr;
  Inode* lru_tail_ = nullptr;
  Inode* hand_ = nullptr;  // where the next trim looks first
  size_t listed_ = 0;
};

}  // namespace ktmfs::fs

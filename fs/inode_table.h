// The inode table: one Inode per backing object, keyed by its (dev, ino) and held open by an
// O_PATH descriptor, so a name renamed behind the kernel's back still reaches the same object
// and hard links share one node. The kernel's node id is the Inode's address (the root is
// FUSE_ROOT_ID); lookup counts follow the kernel's LOOKUP/FORGET protocol.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fs/tx/records.h"
#include "src/guid.h"

namespace ktmfs::fs {

struct Inode {
  // kTxVersion: one transaction's version of an object (see fs/TRANSACTIONS.md, "node ids"):
  // its own node id, so the kernel keeps its pages and attributes apart from everyone else's.
  // `fd` then holds the backing object (existing objects) or the staged one (new objects).
  enum class Kind { kBacking, kVirtualRoot, kTxVersion };
  Kind kind = Kind::kBacking;
  int fd = -1;  // O_PATH, O_NOFOLLOW; -1 for the virtual root
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;  // S_IFMT bits, fixed for the object's life
  uint64_t generation = 0;
  uint64_t nlookup = 0;   // guarded by the table's mutex
  bool pinned = false;    // a root: never dropped by FORGET
  int source_index = -1;  // the source this object belongs to

  // The kernel asks for security.capability before every write(2) to a FUSE file (see
  // ops_xattr.cc). Its absence is known while caps_absent_at == xattr_gen + 1; every xattr
  // change to the object bumps xattr_gen before and after, so an answer read while a change
  // ran is never kept.
  std::atomic<uint64_t> xattr_gen{0};
  std::atomic<uint64_t> caps_absent_at{0};
  void XattrsChanging() { xattr_gen.fetch_add(1, std::memory_order_acq_rel); }

  // File handles open on the node (counted from the start of an open until its release): a
  // version node is handed to a later transaction only while none is open (see
  // InodeTable::AcquireTx).
  std::atomic<uint32_t> open_handles{0};

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

  ~Inode();
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
  // Whether a commit of `tx` should replace object `id` of source `source` rather than write it
  // in place (FsRmOptions::replaceable): not while `tx` has a file open on it, whose writes
  // must keep reaching the committed file; and only if a node besides `tx`'s own knows it (a
  // committed node, or a version node of an ended transaction), since only such a node can
  // hold a size or pages from before the commit.
  bool MayReplace(const Guid& tx, int source, const fstx::ObjectId& id) const;
  std::optional<fuse_ino_t> FindNode(dev_t dev, ino_t ino) const;
  // The committed node of (dev, ino), if any, told that its xattrs may have changed, and
  // whether it is a directory: all under the table's lock, since a FORGET may free the node as
  // soon as it is let go (the kernel drops a replaced file's node at once).
  struct Changed {
    fuse_ino_t node;
    bool dir;
  };
  std::optional<Changed> NoteChanged(dev_t dev, ino_t ino) const;
  // Opens the committed node's object (dev, ino) anew with `flags`, while the table keeps its
  // descriptor from being closed: a new descriptor, or -1 if the kernel knows no such node.
  int ReopenObject(dev_t dev, ino_t ino, int flags) const;
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

  mutable std::mutex mu_;
  std::unordered_map<Key, std::unique_ptr<Inode>, KeyHash> by_key_;
  // By transaction, source and object: objects a transaction creates are numbered per source.
  using VersionKey = std::tuple<Guid, int, fstx::ObjectId>;
  std::map<VersionKey, std::unique_ptr<Inode>> versions_;
  // Version nodes of ended transactions that may be handed over, by source and object.
  std::multimap<std::pair<int, fstx::ObjectId>, Inode*> ended_versions_;
  std::unordered_map<const Inode*, std::string> view_paths_;
  std::unordered_map<const Inode*, std::unique_ptr<Inode>> retired_;
  std::unique_ptr<Inode> virtual_root_;
  Inode* root_ = nullptr;
  std::atomic<uint64_t> next_generation_{1};
};

}  // namespace ktmfs::fs

// Which files open outside transactions the kernel serves itself (FUSE passthrough: it reads,
// writes and maps the backing file without asking the daemon), and the bookkeeping that keeps
// that within the contract. The rules (fs/TRANSACTIONS.md, "Passthrough"):
//
// - Only regular files, only on the committed route, only when INIT took passthrough.
// - All open files of one node are passed through or none is (the kernel answers a mix with
//   EIO), and they share one backing id: registered at the first, closed after the last.
// - An open for writing is passed through only when no transaction holds the file and the file
//   has no set-id bits and no security.capability: its writes never reach the daemon, so they
//   could not be refused (EBUSY), and nothing would clear those from the file's real mode.
//   While it is open the file is an outside writer in the lock table, so a transaction that
//   would change it gets EBUSY.
// - A change that would give a file with such a writer set-id bits or a capability is refused
//   with ETXTBSY (WithoutWriters). The hold lasts while the backing file stays open for writing
//   after the release (a shared mapping made through the file writes on after close(2)).
// - A first open of a file a transaction holds, or whose commit is still being settled, is not
//   passed through: its reads then wait for apply at the visibility gate.
// - A file a transaction created is passed through to its staged file, which is its whole
//   content, for the transaction's own opens (OpenCreated): nobody else can reach it before the
//   commit, and the commit renames that same file into place. A writer holds the object as an
//   outside writer from its open: a descriptor still open after the commit writes the committed
//   file, as any outside writer's does.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "fs/tx/writer_identity.h"
#include "log/owned_mutex.h"

namespace ktmfs::fs {

class Filesystem;
struct Inode;

class PassthroughFiles {
 public:
  // What an open gets: a backing id to pass the file through to, none (0: served by the
  // daemon), or an errno for an open that can be neither (the node's other files are passed
  // through and this one may not be).
  struct Decision {
    int32_t backing_id = 0;
    int err = 0;
  };

  // For an open of `inode` on the committed route, whose own descriptor is `fd` (opened
  // without O_TRUNC: decide before truncating, so a refused open changes nothing) and which the
  // caller counted in inode->open_handles already. `unsettled`: a transaction holds the file or
  // its end is still being settled (TxService::IsUnsettled). A passed-through open is registered at
  // once: Abandon it if the reply does not reach the kernel.
  Decision Open(Filesystem& fs, Inode* inode, int fd, int open_flags, bool unsettled);
  // For an open, inside its live transaction, of a file the transaction created: `inode` is its
  // version node, `fd` the handle's descriptor of the staged file (counted in open_handles
  // already).
  // `setid` says whether the transaction's view gives the file set-id bits or a
  // security.capability, which a write the daemon never sees would not clear; then a writer is
  // served by the daemon. It is asked under the lock that such a change takes (WithoutWriters).
  // `owner`: whom the view gives the file; its passed-through writes take space as that
  // user's would (BackingOpenAsOwner in passthrough.cc).
  Decision OpenCreated(Filesystem& fs, Inode* inode, int fd, int open_flags, fstx::WriterIds owner,
                       const std::function<bool()>& setid);
  void Abandon(Filesystem& fs, Inode* inode, int fd) { Release(fs, inode, fd); }
  // Whether files open on `inode` are passed through now (a next open would be too).
  bool PassesThrough(const Inode* inode);
  // The release of a committed handle: closes `fd`, and ends what its open registered. A
  // writer's hold outlives it while the backing file is still open for writing elsewhere (a
  // shared mapping made through it: fstx::LockTable::RemoveOutsideWriter).
  void Release(Filesystem& fs, Inode* inode, int fd);

  // Lets each source's lock table ask whether a file whose last passed-through writer was
  // released is still open for writing (a shared mapping made through it); once, before
  // serving.
  static void WatchLingeringWriters(Filesystem& fs);

  // Runs `change` (a chmod that adds set-id bits, a security.capability set) unless a
  // passed-through writer holds the object `inode` stands for (through any of its nodes), and
  // returns its result; ETXTBSY otherwise.
  int WithoutWriters(Filesystem& fs, const Inode* inode, const std::function<int()>& change);

 private:
  struct Node {
    int32_t backing_id = 0;
    uint32_t files = 0;
  };
  struct File {
    const Inode* inode;
    bool writer;
  };
  // Why a write through a passed-through file could skip a rule only the daemon enforces: an
  // errno, or 0.
  static int WriterRefusal(int fd);
  // The decision once the open's own refusal of a writer (an errno, or 0) is known; `alone`:
  // no other open file of the node is served by the daemon, nor still deciding. Under mu_.
  Decision DecideLocked(Filesystem& fs, Inode* inode, int fd, bool writer, int refusal, bool alone,
                        std::optional<fstx::WriterIds> owner = std::nullopt);

  OwnedMutex mu_;
  std::unordered_map<const Inode*, Node> nodes_;
  std::unordered_map<int, File> files_;  // by the daemon's descriptor of the open
};

}  // namespace ktmfs::fs

// The committed view's opens and writes (committed_ops.h). Each open gets its own backing
// descriptor in fi->fh, so file position and O_APPEND behave per open as on the backing directory.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "fs/ops/committed_ops.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs::committed {
namespace {

int BackingOpenFlags(const Filesystem& fs, int flags) {
  // Symlinks never get here (the kernel resolves them); O_NOFOLLOW would refuse /proc's link.
  flags &= ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY);
  // The data of a FUSE write sits in the daemon's request buffer, at no alignment O_DIRECT
  // would accept (EINVAL). O_DIRECT is honoured on the kernel side instead (SetOpenReply).
  flags &= ~O_DIRECT;
  if (fs.options().cache.writeback) {
    // The writeback cache reads pages around partial writes and tracks the end of file itself.
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  return flags;
}

void SetOpenReply(const Filesystem& fs, fuse_file_info* fi, int fd) {
  fi->fh = static_cast<uint64_t>(fd);
  fi->keep_cache = fs.options().cache.keep_cache ? 1 : 0;
  // No direct_io for O_DIRECT opens: the kernel serves O_DIRECT on a cached file itself (its
  // reads and writes reach the daemon one request per call, around the page cache, which it
  // writes back and invalidates for the range), while a direct_io handle could not be mapped
  // (ENODEV) and its writes would skip the kernel's clearing of set-id bits.
  // close(2) need not wait for a FLUSH round trip: the backing files are local, where close
  // reports nothing that write and fsync did not, and locks are the kernel's (ktmfs(8)). With
  // the writeback cache the kernel still sends FLUSH after writing its dirty pages back.
  fi->noflush = 1;
}

// Truncates the file an O_TRUNC open opened (its descriptor `fd`, opened without O_TRUNC), and
// drops the set-id bits the kernel leaves to the daemon (atomic_o_trunc). 0 or an errno.
int TruncateForOpen(const Caller& caller, Filesystem& fs, int fd, int open_flags) {
  int r;
  if ((open_flags & O_ACCMODE) != O_RDONLY) {
    r = ftruncate(fd, 0);
  } else {
    // O_RDONLY|O_TRUNC truncates too (the kernel checked write permission for it).
    IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
    r = truncate(ProcPath(fd).c_str(), 0);
  }
  if (r != 0) return errno;
  struct stat st;
  mode_t drop = fstat(fd, &st) == 0 ? SetidBitsToDrop(caller, st, SetidChange::kWrite) : 0;
  if (drop != 0 && fchmod(fd, st.st_mode & 07777 & ~drop) != 0) return errno;
  return 0;
}

// Finishes a committed OPEN (or, with `e`, CREATE) whose descriptor is `fd`: decides whether the
// kernel passes the file through (fs/ops/passthrough.h), then truncates when `truncate` says so
// (after the decision, so a refused open leaves the file as it was), and makes the reply, which
// closes the descriptor if the kernel refuses it. On failure the descriptor is closed; `inode`'s
// handle count is the caller's.
// The kernel passes on the flags of an exec(2)'s open of the program with __FMODE_EXEC among
// them (not in the uapi: include/linux/fs.h).
constexpr int kExecOpenFlag = 0x20;

}  // namespace

void CountOpenFor(Inode* inode, int open_flags, bool open) {
  auto count = [open](std::atomic<uint32_t>& n) { open ? n.fetch_add(1) : n.fetch_sub(1); };
  if ((open_flags & O_ACCMODE) != O_RDONLY) count(inode->write_handles);
  if (open_flags & kExecOpenFlag) count(inode->exec_handles);
}

namespace {

Reply FinishCommittedOpen(const Caller& caller, Filesystem& fs, Inode* inode, fuse_file_info* fi,
                          int fd, bool truncate, const fuse_entry_param* e = nullptr) {
  const bool unsettled =
      fs.txs() != nullptr && fs.txs()->IsUnsettled(inode->source_index, inode->dev, inode->ino);
  const PassthroughFiles::Decision d = fs.passthrough().Open(fs, inode, fd, fi->flags, unsettled);
  if (d.err != 0) {
    close(fd);
    return Reply::Error(d.err);
  }
  // Only a regular file is truncated (the kernel opens FIFOs and devices without the daemon).
  if (truncate && inode->type == S_IFREG) {
    if (int err = TruncateForOpen(caller, fs, fd, fi->flags); err != 0) {
      fs.passthrough().Release(fs, inode, fd);
      return Reply::Error(err);
    }
  }
  SetOpenReply(fs, fi, fd);
  CountOpenFor(inode, fi->flags, true);
  // Pages cached before a transaction changed the file must not be read once it commits: an
  // open while it runs (or is being settled) drops them, in the opener's own context. A
  // passed-through file has no pages of its own, and the kernel refuses one that asks to keep
  // them (FOPEN_KEEP_CACHE is outside FOPEN_PASSTHROUGH_MASK: EIO).
  if (unsettled || d.backing_id != 0) fi->keep_cache = 0;
  Reply r = e != nullptr ? Reply::Create(*e, *fi, d.backing_id) : Reply::Open(*fi, d.backing_id);
  // An interrupted request: the kernel has no file for this open.
  return std::move(r).IfRefused([&fs, inode, fd, flags = fi->flags] {
    CountOpenFor(inode, flags, false);
    fs.passthrough().Release(fs, inode, fd);
  });
}

}  // namespace

Reply Open(const Caller& caller, Filesystem& fs, Inode* inode, fuse_file_info* fi) {
  // O_RDONLY|O_TRUNC truncates as well.
  if (fi->flags & O_TRUNC) {
    if (int err = txops::CheckNotHeld(fs, inode); err != 0) return Reply::Error(err);
  }
  // A program runs from the file through another node (one a transaction's task started it
  // from), where the kernel's own ETXTBSY does not see this open.
  if (((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) && S_ISREG(inode->type) &&
      fs.inodes().IsExecuting(inode->source_index, inode->dev, inode->ino))
    return Reply::Error(ETXTBSY);
  // An open beside passed-through files of the node is passed through too (the kernel refuses
  // a mix), and would read the backing file while an apply writes it (half written, where
  // readers the daemon serves are served it whole from staging): it waits for the apply. A
  // first open is not passed through while the file is unsettled.
  if (fs.txs() != nullptr && fs.passthrough().PassesThrough(inode)) {
    const fstx::VisibilityGate::Key key = GateKey(inode);
    if (fs.txs()->gate().IsClosed(key)) fs.AwaitApply(key);
  }
  int fd, open_err = 0;
  {
    IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
    fd = fs.inodes().OpenMakingRoom([&] {
      return open(ProcPath(inode->Fd().get()).c_str(), BackingOpenFlags(fs, fi->flags) & ~O_TRUNC);
    });
    if (fd < 0) open_err = errno;
  }
  if (fd < 0) return Reply::Error(open_err);
  // The kernel leaves an O_TRUNC open to the daemon (atomic_o_trunc), set-id bits included.
  return FinishCommittedOpen(caller, fs, inode, fi, fd, (fi->flags & O_TRUNC) != 0);
}

Reply Create(const Caller& caller, Filesystem& fs, Inode* p, const char* name, mode_t mode,
             fuse_file_info* fi) {
  if (p->is_virtual_root() || fs.IsHiddenName(p, name)) return Reply::Error(EPERM);
  if (int err = txops::CheckEntryNotHeld(fs, p, name); err != 0) return Reply::Error(err);
  fuse_entry_param e;
  int fd;
  {
    IdentityScope id(caller, IdentityUse::kCreates, fs.kernel_checks());
    int flags = BackingOpenFlags(fs, fi->flags) | O_CREAT | O_NOFOLLOW | (fi->flags & O_EXCL);
    fd = fs.inodes().OpenMakingRoom(
        [&] { return openat(p->Fd().get(), name, flags, id.CreateMode(mode)); });
    if (fd < 0) return Reply::Error(errno);
    int err = fs.Lookup(p, name, &e);
    if (err != 0) {
      close(fd);
      return Reply::Error(err);
    }
  }
  // The daemon's own credentials from here: a backing file is registered with them, and the
  // kernel does the passed-through file's I/O with them.
  Inode* inode = fs.Get(e.ino);
  inode->open_handles.fetch_add(1);
  // Unless the kernel gets the file: the handle's count, then the lookup of the entry.
  auto undo = [&fs, inode] {
    inode->open_handles.fetch_sub(1);  // before the forget, which may free the node
    fs.inodes().Forget(inode, 1);
  };
  // openat truncated an existing file itself: CREATE comes for a name the kernel found missing,
  // so the file is nearly always new.
  Reply r = FinishCommittedOpen(caller, fs, inode, fi, fd, /*truncate=*/false, &e);
  if (r.error() != 0) {
    undo();
    return r;
  }
  return std::move(r).IfRefused(undo);
}

Reply Write(const Caller& caller, Filesystem& fs, fuse_ino_t ino, fuse_bufvec* in, off_t off,
            fuse_file_info* fi) {
  if (int err = txops::CheckNotHeld(fs, fs.Get(ino)); err != 0) return Reply::Error(err);
  if (int err = DropSetidOnWrite(caller, fs, ino, static_cast<int>(fi->fh), fi); err != 0)
    return Reply::Error(err);
  fuse_bufvec out = FdBuffer(fuse_buf_size(in), static_cast<int>(fi->fh), off);
  ssize_t n;
  {
    const int fd = static_cast<int>(fi->fh);
    fstx::WriterIdentity as(fi->writepage ? fstx::OwnerOf(fd)
                                          : fstx::WriterIds{caller.uid(), caller.gid()});
    n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  }
  if (n < 0) return Reply::Error(static_cast<int>(-n));
  return WriteDone(fs, ino, fi, off, static_cast<size_t>(n));
}

}  // namespace ktmfs::fs::committed

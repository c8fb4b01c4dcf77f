// Open file requests: open/create, read and write (data spliced when the kernel allows), flush,
// release, fsync, fallocate, copy_file_range and lseek. Opens, creates and writes outside
// transactions are committed_file.cc's; inside, tx_ops_file.cc's.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstring>
#include <span>
#include <thread>
#include <vector>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/adapter.h"
#include "fs/ops/committed_ops.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/writer_identity.h"
#include "ktmfs_config.h"

namespace ktmfs::fs {
namespace {

// Counts a handle on a node from the start of its open (before the request reads the node's
// transaction: see InodeTable::AcquireTx) until the reply: the count stays with a file the kernel
// gets, which OpRelease uncounts, and goes before any other reply is sent. After a reply the node
// is not the request's: once its open has failed, the kernel may forget the node, and a FORGET
// on another thread free it.
class HandleCount {
 public:
  explicit HandleCount(Inode* inode) : inode_(inode) { inode_->open_handles.fetch_add(1); }
  ~HandleCount() { assert(settled_ && "the reply was made through For"); }
  HandleCount(const HandleCount&) = delete;
  HandleCount& operator=(const HandleCount&) = delete;
  // `r`, the open's reply, with the count settled for it: kept with a file (and given back if the
  // kernel refuses the reply), given back now for anything else.
  Reply For(Reply r) {
    settled_ = true;
    if (r.error() != 0) {
      inode_->open_handles.fetch_sub(1);
      return r;
    }
    return std::move(r).IfRefused([inode = inode_] { inode->open_handles.fetch_sub(1); });
  }

 private:
  Inode* inode_;
  bool settled_ = false;
};

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root()) {
    Send(req, Reply::Error(EISDIR));
    return;
  }
  HandleCount count(inode);
  // An open that will change the file (or truncates it now) waits as a change does.
  const bool changes = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
  Serve(
      req, inode, changes ? Access::kChange : Access::kOpen,
      [&] { return committed::Open(Caller::Of(req), fs, inode, fi); },
      [&](const TxGuard& tx) { return txops::Open(Caller::Of(req), fs, tx, inode, fi); },
      [&](Reply r) { return count.For(std::move(r)); });
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  Inode* p = fs.Get(parent);
  Serve(
      req, p, Access::kChange,
      [&] { return committed::Create(Caller::Of(req), fs, p, name, mode, fi); },
      [&](const TxGuard& tx) { return txops::Create(Caller::Of(req), fs, tx, p, name, mode, fi); });
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(
        req, fi, [&](const TxGuard& tx) { return txops::Read(fs, tx, size, off, fi); },
        Access::kRead);
    return;
  }
  // The data is read as the reply goes out: the pass lasts until then.
  Inode* inode = fs.Get(ino);
  auto visible = fs.ReadingCommittedOrServed(inode);
  if (const fstx::ServedObject* served = fs.ServedFrom(visible, inode)) {
    Send(req, txops::ReadInto(*served, size, off));
    return;
  }
  Send(req, Reply::FileData(static_cast<int>(fi->fh), size, off));
}

void OpWriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(req, fi, [&](const TxGuard& tx) {
      return txops::Write(Caller::Of(req), fs, tx, in, off, fi);
    });
    return;
  }
  Send(req, committed::Write(Caller::Of(req), fs, ino, in, off, fi));
}

void OpFlush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  if (txops::IsTxHandle(fi)) {
    txops::Flushed(fi);
    Send(req, Reply::Ok());
    return;
  }
  // Closing a duplicate reports the backing filesystem's deferred errors at close(2) time.
  int dup_fd = dup(static_cast<int>(fi->fh));
  int err = dup_fd < 0 ? errno : (close(dup_fd) == 0 ? 0 : errno);
  Send(req, Reply::Error(err));
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  committed::CountOpenFor(inode, fi->flags, false);
  if (txops::IsTxHandle(fi)) {
    if (const unsigned ms = fs.options().fault_release_delay_ms; KTMFS_FAULT_HOOKS && ms != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    // Before the count lets a later open of the node choose differently.
    const bool flushed = txops::Release(fs, fi);
    inode->open_handles.fetch_sub(1);
    if (flushed) inode->flushed_handles.fetch_sub(1);
    fs.inodes().HandlesChanged();
    Send(req, Reply::Ok());
    return;
  }
  // Before the count lets a later open of the node choose differently.
  fs.passthrough().Release(fs, inode, static_cast<int>(fi->fh));
  inode->open_handles.fetch_sub(1);
  Send(req, Reply::Ok());
}

void OpFsync(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) {
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(req, fi,
                  [&](const TxGuard& tx) { return txops::Fsync(Fs(req), tx, datasync, fi); });
    return;
  }
  int fd = static_cast<int>(fi->fh);
  int r = datasync ? fdatasync(fd) : fsync(fd);
  Send(req, Reply::Error(r == 0 ? 0 : errno));
}

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                 fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(req, fi, [&](const TxGuard& tx) {
      return txops::Fallocate(Caller::Of(req), fs, tx, mode, off, len, fi);
    });
    return;
  }
  Send(req, [&] {
    if (int err = txops::CheckNotHeld(fs, fs.Get(ino)); err != 0) return Reply::Error(err);
    const Caller caller = Caller::Of(req);
    if (int err = DropSetidOnWrite(caller, fs, ino, static_cast<int>(fi->fh), fi); err != 0)
      return Reply::Error(err);
    fstx::WriterIdentity as(caller.uid(), caller.gid());
    int r = fallocate(static_cast<int>(fi->fh), mode, off, len);
    return Reply::Error(r == 0 ? 0 : errno);
  }());
}

constexpr size_t kCopyAtMost = 64 << 20;

void OpCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                     int flags) {
  Send(req, [&] {
    // Inside a transaction the kernel copies through read and write instead.
    if (txops::IsTxHandle(fi_in) || txops::IsTxHandle(fi_out)) return Reply::Error(EOPNOTSUPP);
    Filesystem& fs = Fs(req);
    // It reads the source, which an apply may be writing: it waits for that, as a read does,
    // before the checks of the destination, so that they still hold when it writes. The pass
    // holds up an apply of the source while the copy runs, so one request copies a bounded
    // amount (a short copy, which callers of copy_file_range(2) repeat).
    auto visible = fs.ReadingCommitted(fs.Get(ino_in));
    if (int err = txops::CheckNotHeld(fs, fs.Get(ino_out)); err != 0) return Reply::Error(err);
    if (int err =
            DropSetidOnWrite(Caller::Of(req), fs, ino_out, static_cast<int>(fi_out->fh), fi_out);
        err != 0)
      return Reply::Error(err);
    loff_t in = off_in, out = off_out;
    const Caller caller = Caller::Of(req);
    fstx::WriterIdentity as(caller.uid(), caller.gid());
    ssize_t n = copy_file_range(static_cast<int>(fi_in->fh), &in, static_cast<int>(fi_out->fh),
                                &out, std::min(len, kCopyAtMost), static_cast<unsigned>(flags));
    return n < 0 ? Reply::Error(errno) : Reply::Written(static_cast<size_t>(n));
  }());
}

void OpLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  if (txops::IsTxHandle(fi)) {
    ServeTxHandle(
        req, fi, [&](const TxGuard& tx) { return txops::Lseek(Fs(req), tx, off, whence, fi); },
        Access::kReadLayout);
    return;
  }
  // With the writeback cache, data may still sit in the kernel's pages (the kernel does not
  // flush before SEEK_DATA/SEEK_HOLE), so the backing file's holes are not the file's. ENOSYS
  // makes the kernel answer itself from then on: all of the file is data, the hole is at EOF.
  if (Fs(req).options().cache.writeback) {
    Send(req, Reply::Error(ENOSYS));
    return;
  }
  // Where the data and holes are: read as any read of the file is.
  auto visible = Fs(req).ReadingCommitted(Fs(req).Get(ino));
  off_t r = lseek(static_cast<int>(fi->fh), off, whence);
  Send(req, r < 0 ? Reply::Error(errno) : Reply::Seek(r));
}

}  // namespace

void AddFileOps(fuse_lowlevel_ops* ops) {
  ops->open = OpOpen;
  ops->create = OpCreate;
  ops->read = OpRead;
  ops->write_buf = OpWriteBuf;
  ops->flush = OpFlush;
  ops->release = OpRelease;
  ops->fsync = OpFsync;
  ops->fallocate = OpFallocate;
  ops->copy_file_range = OpCopyFileRange;
  ops->lseek = OpLseek;
}

}  // namespace ktmfs::fs

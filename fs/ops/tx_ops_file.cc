// Files opened inside a transaction (see tx_ops.h). A handle remembers its transaction, so
// requests that arrive without a useful caller (write-back, mmap writes, release) still belong
// to it; once the transaction has ended the handle reads and writes the object as it now is.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fs/fuse/kernel_channel.h"
#include "fs/ops/committed_ops.h"
#include "fs/ops/passthrough.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_ops_common.h"
#include "fs/tx/apply_plan.h"
#include "fs/tx/direct_io.h"
#include "fs/tx/writer_identity.h"
#include "fs/tx/xattr_names.h"

namespace ktmfs::fs::txops {
namespace {

// Writes up to this size are logged with their data (see fstx::OpKind::kWriteData); larger ones
// are referenced in the staged file, so big data is written once before apply. A transaction
// carries at most kInlineBudget bytes that way (they stay in memory until it ends).
constexpr size_t kInlineWriteMax = 64 << 10;
constexpr uint64_t kInlineBudget = 16 << 20;

// A user's transaction may log no more than its RM can carry forward (FsResourceManager::
// CarryLimit): half of that for carried data leaves the rest to its other ops, and its writes
// past it are staged, not refused.
uint64_t InlineBudget(Filesystem& fs, const TxGuard& tx, int source) {
  if (tx->owner == 0) return kInlineBudget;
  return std::min<uint64_t>(kInlineBudget, fs.txs()->rm(source).CarryLimit() / 2);
}

// fh values of plain handles are descriptors (below 2^31); transactional handles are tagged
// pointers, told apart by the top bit.
constexpr uint64_t kTxHandleTag = 1ull << 63;

struct TxHandle {
  Guid tx;
  Inode* inode;
  int flags;
  // New files: the staged file itself (read-write for a writer). Existing files: the committed
  // file, read-only, for the bytes the transaction did not write.
  int fd = -1;
  int after_end_fd = -1;  // opened on first use once the transaction has ended
  // New files: the staged file with O_DIRECT, opened by the first big write (-1: refused).
  int direct_fd = kNotOpened;
  static constexpr int kNotOpened = -2;
  std::mutex mu;
  std::atomic<bool> flushed{false};  // counted in inode->flushed_handles (Flushed)
  ~TxHandle() {
    if (fd >= 0) close(fd);
    if (after_end_fd >= 0) close(after_end_fd);
    if (direct_fd >= 0) close(direct_fd);
  }
  bool is_new() const { return inode->object.kind == fstx::ObjectId::Kind::kNew; }
};

// The daemon's own descriptor of a created file for a handle opened with `flags`: read-write
// only for a writer, since one open for writing keeps a passed-through writer's hold from
// ending (PassthroughFiles::Release asks whether the file is still open for writing).
int CreatedFileAccess(int flags) {
  return (flags & O_ACCMODE) == O_RDONLY ? O_RDONLY : O_RDWR;
}

TxHandle* HandleOf(const fuse_file_info* fi) {
  return reinterpret_cast<TxHandle*>(static_cast<uintptr_t>(fi->fh & ~kTxHandleTag));
}

// What the kernel is told of a handle opened (or created) inside a transaction.
void SetTxOpenReply(fuse_file_info* fi, const TxHandle* h) {
  fi->fh = reinterpret_cast<uintptr_t>(h) | kTxHandleTag;
  // The version node's pages are the transaction's own; dropping them at each open keeps a
  // rolled-back version from being read back through a later open.
  fi->keep_cache = 0;
  // O_DIRECT without direct_io, as outside transactions (see SetOpenReply in ops_file.cc): the
  // kernel sends its reads and writes here one request per call, so they read and write the
  // view (writes go to staging) and the handle can still be mapped.
  // close(2) must write back pages dirtied through mmap while the transaction still lives.
  fi->noflush = 0;
}

// Whether the kernel serves the handle of a file the transaction created itself, on its staged
// file (PassthroughFiles::OpenCreated). A writer is not passed through while the view gives the
// file set-id bits or a capability: only the daemon would clear them at a write.
PassthroughFiles::Decision PassCreated(Filesystem& fs, const TxGuard& tx, TxHandle* h) {
  struct stat view;
  if (TxStat(fs, tx, h->inode, &view) != 0) return {};
  const fstx::WriterIds owner{view.st_uid, view.st_gid};
  return fs.passthrough().OpenCreated(fs, h->inode, h->fd, h->flags, owner, [&] {
    struct stat st;
    std::optional<std::string> caps;
    return TxStat(fs, tx, h->inode, &st) != 0 || (st.st_mode & (S_ISUID | S_ISGID)) != 0 ||
           ViewXattr(fs, tx, h->inode, fstx::kCapabilityXattr, &caps) != 0 || caps.has_value();
  });
}

// Closes the handle's descriptor, and ends what a passed-through open registered with it.
void CloseHandleFd(Filesystem& fs, TxHandle* h) {
  if (h->fd < 0) return;
  fs.passthrough().Release(fs, h->inode, h->fd);
  h->fd = -1;
}

// The reply to an open (with `e`, a create) of `h`, passed through to `backing_id` if not 0. If
// the kernel refuses it (the open was interrupted), it has no file, so nothing will release `h`.
Reply OpenReply(Filesystem& fs, fuse_file_info* fi, std::unique_ptr<TxHandle> h, int32_t backing_id,
                const fuse_entry_param* e = nullptr) {
  SetTxOpenReply(fi, h.get());
  // A program a transaction's task starts runs from the version node, and a descriptor kept
  // after the end writes the committed file through it: counted as on committed nodes.
  committed::CountOpenFor(h->inode, fi->flags, true);
  Reply r = e != nullptr ? Reply::Create(*e, *fi, backing_id) : Reply::Open(*fi, backing_id);
  return std::move(r).IfRefused([&fs, handle = h.release(), flags = fi->flags] {
    committed::CountOpenFor(handle->inode, flags, false);
    CloseHandleFd(fs, handle);
    delete handle;
  });
}

int DirectFd(TxHandle* h) {
  std::lock_guard l(h->mu);
  if (h->direct_fd == TxHandle::kNotOpened)
    h->direct_fd = fstx::ReopenDirect(h->fd, O_WRONLY | O_CLOEXEC);
  return h->direct_fd;
}

// The data of a write request, gathered into the calling thread's aligned buffer (it may
// arrive spliced, in a pipe), valid until this thread's next request.
Result<std::span<const std::byte>> Gather(fuse_bufvec* in) {
  const size_t size = fuse_buf_size(in);
  std::span<std::byte> buf = fstx::ThreadBuffer(size);
  if (buf.size() < size) return Status::Error(ENOMEM, "no buffer for a write");
  fuse_bufvec mem{};
  mem.count = 1;
  mem.buf[0].size = size;
  mem.buf[0].mem = buf.data();
  ssize_t got = fuse_buf_copy(&mem, in, static_cast<fuse_buf_copy_flags>(0));
  if (got < 0) return Status::Error(static_cast<int>(-got), "reading a write request");
  return std::span<const std::byte>(buf.data(), static_cast<size_t>(got));
}

// The descriptor for requests after the transaction ended: the object as committed now.
int AfterEndFd(TxHandle* h) {
  std::lock_guard l(h->mu);
  if (h->after_end_fd < 0) {
    int acc = h->flags & O_ACCMODE;
    h->after_end_fd = open(ProcPath(h->inode->Fd().get()).c_str(), acc | O_CLOEXEC);
  }
  return h->after_end_fd;
}

// The staged file of an existing file the handle's live transaction wrote (null: none yet).
fstx::StagedFile* StagedOf(Filesystem& fs, const TxGuard& tx, const TxHandle* h) {
  fstx::TxStaging* staging = fs.txs()->rm(h->inode->source_index).FindStaging(tx.id());
  return staging != nullptr
             ? staging->Find(fstx::StagedNameForExisting(h->inode->dev, h->inode->ino))
             : nullptr;
}

// Makes `op` (its object, path, offset and length set) the record of a write of `data` to an
// existing file, staged under `staged_name`, and counts what it keeps against its owner's
// memory (ENOSPC past the cap): the data travels in the record up to kInlineWriteMax, within
// the transaction's InlineBudget and the owner's cap, else the record refers to the staged file.
Result<uint64_t> ChargeWrite(Filesystem& fs, const TxGuard& tx, int source,
                             std::span<const std::byte> data, const std::string& staged_name,
                             fstx::Op* op) {
  if (data.size() <= kInlineWriteMax) {
    if (tx->inline_bytes.fetch_add(data.size()) + data.size() <= InlineBudget(fs, tx, source)) {
      op->kind = fstx::OpKind::kWriteData;
      op->data.assign(reinterpret_cast<const char*>(data.data()), data.size());
      auto charged = fs.txs()->ChargeFor(*tx, *op);
      if (charged.ok()) return charged;
    }
    tx->inline_bytes.fetch_sub(data.size());
  }
  op->kind = fstx::OpKind::kWriteExtent;
  op->data.clear();
  op->staged_file = staged_name;
  return fs.txs()->ChargeFor(*tx, *op);
}

Result<uint64_t> ViewSize(Filesystem& fs, const TxGuard& tx, Inode* inode) {
  struct stat st;
  int err = TxStat(fs, tx, inode, &st);
  if (err != 0) return Status::Error(err, "size");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

bool IsTxHandle(const fuse_file_info* fi) {
  return fi != nullptr && (fi->fh & kTxHandleTag) != 0;
}

Inode* HandleInode(const fuse_file_info* fi) {
  return HandleOf(fi)->inode;
}

TxGuard EnterByHandle(Filesystem& fs, const fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  if (h->flushed.load(std::memory_order_relaxed) && h->flushed.exchange(false)) {
    h->inode->flushed_handles.fetch_sub(1);
    fs.inodes().HandlesChanged();
  }
  return fs.txs()->EnterById(h->tx);
}

void Flushed(const fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  // Counted before the mark, so that a use racing this (which takes the count back after the
  // mark) never takes the count below the marks set.
  h->inode->flushed_handles.fetch_add(1);
  if (h->flushed.exchange(true)) h->inode->flushed_handles.fetch_sub(1);  // marked already
}

Reply Open(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* inode,
           fuse_file_info* fi) {
  if (!S_ISREG(inode->type)) return Reply::Error(S_ISDIR(inode->type) ? EISDIR : ENXIO);
  auto h = std::make_unique<TxHandle>();
  h->tx = tx.id();
  h->inode = inode;
  h->flags = fi->flags;
  if (h->is_new()) {
    h->fd = open(ProcPath(inode->Fd().get()).c_str(), CreatedFileAccess(fi->flags) | O_CLOEXEC);
  } else {
    h->fd = open(ProcPath(inode->Fd().get()).c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (h->fd < 0) return Reply::Error(errno);
  // Writes through the handle take the file's lock: the caller must be allowed to write it
  // (the kernel checked too, against attributes it may have cached).
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    struct stat st;
    int err = TxStat(fs, tx, inode, &st);
    if (err == 0)
      err = MayAccess(RequesterOf(caller), st, kMayWrite,
                      OrNull(ViewAcl(fs, tx, inode, kAclAccessXattr)));
    // A program runs from the file: natively ETXTBSY. The kernel cannot say so here, as the
    // program runs from the committed node, and the commit would write the file under it.
    if (err == 0 && !h->is_new() &&
        fs.inodes().IsExecuting(inode->source_index, inode->dev, inode->ino))
      err = ETXTBSY;
    if (err != 0) {
      CloseHandleFd(fs, h.get());
      return Reply::Error(err);
    }
  }
  const PassthroughFiles::Decision d =
      h->is_new() ? PassCreated(fs, tx, h.get()) : PassthroughFiles::Decision{};
  if (d.err != 0) return Reply::Error(d.err);
  // Linux truncates on O_TRUNC even with O_RDONLY (the kernel checked write permission).
  if (fi->flags & O_TRUNC) {
    auto path = NodePath(fs, tx, inode);
    int err = path.ok() ? Truncate(fs, tx, inode, *path, 0) : path.status().code();
    // The kernel leaves set-id bits to the daemon on an O_TRUNC open (atomic_o_trunc).
    if (err == 0) err = DropSetidForWrite(caller, fs, tx, inode);
    if (err != 0) {
      CloseHandleFd(fs, h.get());
      return Reply::Error(err);
    }
  }
  return OpenReply(fs, fi, std::move(h), d.backing_id);
}

Reply Create(const Caller& caller, Filesystem& fs, const TxGuard& tx, Inode* parent,
             const char* name, mode_t mode, fuse_file_info* fi) {
  std::string view;
  uint64_t n = 0;
  int err = MakeIn(caller, fs, tx, parent, name, S_IFREG | (mode & 07777), 0, nullptr, &view, &n);
  fuse_entry_param e;
  if (err == 0) err = TxLookupEntry(fs, tx, parent->source_index, view, name, &e);
  if (err != 0) return Reply::Error(err);
  Inode* inode = fs.Get(e.ino);
  auto h = std::make_unique<TxHandle>();
  h->tx = tx.id();
  h->inode = inode;
  h->flags = fi->flags;
  h->fd = open(ProcPath(inode->Fd().get()).c_str(), CreatedFileAccess(fi->flags) | O_CLOEXEC);
  if (h->fd < 0) {
    int e2 = errno;
    fs.inodes().Forget(inode, 1);
    return Reply::Error(e2);
  }
  inode->open_handles.fetch_add(1);
  // Unless the kernel gets the file: the handle's count, then the lookup of the entry.
  auto undo = [&fs, inode] {
    inode->open_handles.fetch_sub(1);  // before the forget, which may free the node
    fs.inodes().Forget(inode, 1);
  };
  // The view's mode is the one just made, whose set-id bits a caller may give a new file.
  const PassthroughFiles::Decision d = PassCreated(fs, tx, h.get());
  if (d.err != 0) {
    CloseHandleFd(fs, h.get());
    undo();
    return Reply::Error(d.err);
  }
  return OpenReply(fs, fi, std::move(h), d.backing_id, &e).IfRefused(undo);
}

Reply Read(Filesystem& fs, const TxGuard& tx, size_t size, off_t off, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  int fd = h->fd;
  // Not the file itself while a commit's apply writes it in place (TxGuard::ServedFrom), inside
  // the transaction or after it ended. The transaction has no staged copy of it then: the
  // committing one holds the file's lock.
  if (const fstx::ServedObject* served = tx.ServedFrom(GateKey(h->inode)))
    return ReadInto(*served, size, off);
  if (!tx) {
    fd = AfterEndFd(h);
    if (fd < 0) return Reply::Error(errno);
  } else if (!h->is_new()) {
    if (fstx::StagedFile* f = StagedOf(fs, tx, h)) return ReadInto(*f, size, off);
  }
  return Reply::FileData(fd, size, off);
}

Reply Write(const Caller& caller, Filesystem& fs, const TxGuard& tx, fuse_bufvec* in, off_t off,
            fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  const size_t size = fuse_buf_size(in);
  // Pages written back come for nobody (writer_identity.h): the transaction's owner wrote them,
  // or, once it has ended, the committed file's owner is charged.
  auto writer = [&](int fd) {
    if (!fi->writepage) return fstx::WriterIds{caller.uid(), caller.gid()};
    return tx ? fstx::WriterIds{tx->owner, tx->owner_gid} : fstx::OwnerOf(fd);
  };
  // With the writeback cache the kernel puts an O_APPEND write at the end itself, and the
  // daemon gets pages at their offsets (as BackingOpenFlags says for the committed view):
  // appending them again duplicated what was there.
  const bool append = (h->flags & O_APPEND) && !fs.options().cache.writeback;
  auto write_fd = [&](int fd, off_t pos) {
    fuse_bufvec out = FdBuffer(size, fd, pos);
    ssize_t n;
    {
      fstx::WriterIdentity as(writer(fd));
      n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
    }
    if (n < 0) return Reply::Error(static_cast<int>(-n));
    return WriteDone(fs, fs.inodes().NodeId(h->inode), fi, pos, static_cast<size_t>(n));
  };
  if (!tx) {
    // Ended: a plain write to the object, which the usual conflict rule guards.
    if (int err = CheckNotHeld(fs, h->inode); err != 0) return Reply::Error(err);
    int fd = AfterEndFd(h);
    if (fd < 0) return Reply::Error(errno);
    if (int err = DropSetidOnWrite(caller, fs, fs.inodes().NodeId(h->inode), fd, fi); err != 0)
      return Reply::Error(err);
    return write_fd(fd, append ? lseek(fd, 0, SEEK_END) : off);
  }
  Inode* inode = h->inode;
  const int source = inode->source_index;
  // The view drops set-id bits as a write by this caller would (see DropSetidOnWrite).
  if (!fi->writepage && !KernelChannel::CurrentWriterKeepsSetid()) {
    if (int err = DropSetidForWrite(caller, fs, tx, inode); err != 0) return Reply::Error(err);
  }
  if (append) {
    auto end = ViewSize(fs, tx, inode);
    if (!end.ok()) return Reply::Error(end.status().code());
    off = static_cast<off_t>(*end);
  }
  if (h->is_new()) {
    TouchTimes(fs, tx, source, inode->object, true);
    if (size < fstx::kDirectAlign) return write_fd(h->fd, off);
    // A big write goes to the staged file past the page cache: it is read again only by the
    // transaction, and prepare need not write it back (see fs/tx/direct_io.h).
    auto data = Gather(in);
    Status s = data.status();
    if (data.ok()) {
      fstx::WriterIdentity as(writer(h->fd));
      s = fstx::WriteAt(h->fd, DirectFd(h), *data, static_cast<uint64_t>(off),
                        "staged file of a new file");
    }
    if (!s.ok()) return Reply::Error(Errno(s));
    return WriteDone(fs, fs.inodes().NodeId(inode), fi, off, data->size());
  }
  TakenLocks taken(fs, tx, source);
  if (int err = LockObject(fs, tx, inode); err != 0) return Reply::Error(err);
  auto path = NodePath(fs, tx, inode);
  if (!path.ok()) return Reply::Error(path.status().code());
  // The data, gathered from the request (it may be spliced), goes to the staged file once.
  auto gathered = Gather(in);
  if (!gathered.ok()) return Reply::Error(Errno(gathered.status()));
  std::span<const std::byte> data = *gathered;
  fstx::Op op;
  op.object = inode->object;
  op.path = *path;
  op.offset = static_cast<uint64_t>(off);
  op.length = data.size();
  const std::string staged_name = fstx::StagedNameForExisting(inode->dev, inode->ino);
  // What the op keeps counts against its owner's memory before anything is staged: past the
  // owner's cap, ENOSPC, and nothing staged.
  auto prepaid = ChargeWrite(fs, tx, source, data, staged_name, &op);
  if (!prepaid.ok()) return Reply::Error(Errno(prepaid.status()));
  const bool carried = op.kind == fstx::OpKind::kWriteData;
  auto refused = [&](const Status& s) {
    if (carried) tx->inline_bytes.fetch_sub(data.size());
    return Reply::Error(Errno(s));
  };
  // A user's record refused once the data is staged would leave the transaction unable to
  // commit what it did before (StagedFile::Unlogged).
  if (Status room = fs.txs()->RoomInLog(*tx, source, op); !room.ok()) {
    fs.txs()->Refund(*tx, *prepaid);
    return refused(room);
  }
  taken.Stages(inode);
  auto f = StagedFor(fs, tx, inode);
  if (!f.ok()) {
    fs.txs()->Refund(*tx, *prepaid);
    return refused(f.status());
  }
  assert((*f)->name() == staged_name);
  // The staged data takes space as the writer's own would, unless it replaces bytes the
  // committed file has blocks for: an overwrite in place needs none natively, and the staged
  // copy lasts only until the commit puts it in place. Its record is the daemon's, always.
  std::optional<fstx::WriterIdentity> as;
  auto as_writer = [&] {
    const fstx::WriterIds ids = writer(h->fd);
    // Every write comes here: the checks below (a stat and a seek) only for one that switches.
    if (!fstx::WriterIdentity::Switches(ids.uid)) return;
    if ((*f)->CommittedHasBlocks(static_cast<uint64_t>(off), data.size())) return;
    // The staging directory, if the write makes it, is the daemon's.
    auto staging = fs.txs()->rm(source).Staging(tx.id());
    if (staging.ok() && !(*staging)->MakeDir().ok()) return;
    as.emplace(ids);
  };
  as_writer();
  // Small writes travel in their record: the commit then need not sync the staged file, which
  // only serves the transaction's reads (and may stay in memory). Others are staged like big
  // ones, which keeps less in memory.
  Status s = carried ? (*f)->WriteLogged(static_cast<uint64_t>(off), data)
                     : (*f)->Write(static_cast<uint64_t>(off), data);
  as.reset();
  if (!s.ok()) {
    fs.txs()->Refund(*tx, *prepaid);
    return refused(s);
  }
  s = fs.txs()->LogOp(*tx, source, op, *prepaid);
  if (!s.ok()) {
    // The staged file has it, the records not, unless it goes with the lock: see
    // StagedFile::Unlogged.
    if (!taken.GiveBack()) (*f)->Unlogged(s);
    return refused(s);
  }
  taken.Keep();
  TouchTimes(fs, tx, source, inode->object, true);
  return WriteDone(fs, fs.inodes().NodeId(inode), fi, off, data.size());
}

bool Release(Filesystem& fs, fuse_file_info* fi) {
  std::unique_ptr<TxHandle> h(HandleOf(fi));
  // The daemon's other descriptors first: one open for writing would keep a passed-through
  // writer's hold lingering (PassthroughFiles::Release asks whether the file is still open for
  // writing).
  if (h->after_end_fd >= 0) close(std::exchange(h->after_end_fd, -1));
  if (h->direct_fd >= 0) close(std::exchange(h->direct_fd, TxHandle::kNotOpened));
  CloseHandleFd(fs, h.get());
  return h->flushed.load();
}

Reply Fsync(Filesystem& fs, const TxGuard& tx, int datasync, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  if (!tx) {
    // Ended: the handle writes the object as committed now (a passed-through one without the
    // daemon), and those writes are durable only by this. Any descriptor of the file syncs it:
    // a read-only one can be opened whatever the file's mode now, and does not keep it open for
    // writing (see CreatedFileAccess).
    const int fd = open(ProcPath(h->inode->Fd().get()).c_str(), O_RDONLY | O_CLOEXEC);
    const int r = fd < 0 ? -1 : datasync ? fdatasync(fd) : fsync(fd);
    const int err = r == 0 ? 0 : errno;
    if (fd >= 0) close(fd);
    return Reply::Error(err);
  }
  // Inside a transaction durability comes with the commit, for every change at once; what a
  // queued write of the file met is reported now, as a buffered write's error is at fsync(2).
  fstx::StagedFile* f = h->is_new() ? nullptr : StagedOf(fs, tx, h);
  return Reply::Error(f != nullptr ? Errno(f->Settle()) : 0);
}

Reply Fallocate(const Caller& caller, Filesystem& fs, const TxGuard& tx, int mode, off_t off,
                off_t len, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  if (!tx) return Reply::Error(EIO);
  if (h->is_new()) {
    fstx::WriterIdentity as(caller.uid(), caller.gid());
    return Reply::Error(fallocate(h->fd, mode, off, len) == 0 ? 0 : errno);
  }
  if (mode & ~FALLOC_FL_KEEP_SIZE) return Reply::Error(EOPNOTSUPP);
  // Set-id bits go as for a write (see DropSetidOnWrite).
  if (int e = DropSetidForWrite(caller, fs, tx, h->inode); e != 0) return Reply::Error(e);
  // Space is the backing file system's business at apply; what the view shows is the size.
  auto size = ViewSize(fs, tx, h->inode);
  int err = size.ok() ? 0 : size.status().code();
  const uint64_t end = static_cast<uint64_t>(off) + static_cast<uint64_t>(len);
  if (err == 0 && !(mode & FALLOC_FL_KEEP_SIZE) && end > *size) {
    auto path = NodePath(fs, tx, h->inode);
    err = path.ok() ? Truncate(fs, tx, h->inode, *path, end) : path.status().code();
  }
  return Reply::Error(err);
}

Reply Lseek(Filesystem& fs, const TxGuard& tx, off_t off, int whence, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  if (h->is_new() || !tx) {
    off_t r = lseek(tx ? h->fd : AfterEndFd(h), off, whence);
    return r < 0 ? Reply::Error(errno) : Reply::Seek(r);
  }
  // Holes of a file the transaction changed are not tracked: all of it reads as data.
  auto size = ViewSize(fs, tx, h->inode);
  if (!size.ok()) return Reply::Error(size.status().code());
  const off_t end = static_cast<off_t>(*size);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return Reply::Error(EINVAL);
  if (off >= end) return Reply::Error(ENXIO);
  return Reply::Seek(whence == SEEK_DATA ? off : end);
}

Reply SetattrByHandle(const Caller& caller, Filesystem& fs, const TxGuard& tx,
                      const struct stat* attr, int to_set, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  if (!tx) return Reply::Error(EIO);
  return Setattr(caller, fs, tx, h->inode, attr, to_set, true);
}

Reply GetattrByHandle(Filesystem& fs, const TxGuard& tx, fuse_file_info* fi) {
  TxHandle* h = HandleOf(fi);
  struct stat st;
  int err = 0;
  if (tx) {
    err = TxStat(fs, tx, h->inode, &st);
  } else if (const fstx::ServedObject* served = tx.ServedFrom(GateKey(h->inode))) {
    st = served->Attributes();
  } else {
    err = fs.Stat(h->inode, &st);
  }
  return err != 0 ? Reply::Error(err) : Reply::Attr(st, 0);
}

}  // namespace ktmfs::fs::txops

// Directory handles: opendir/readdir/readdirplus/releasedir/fsyncdir. Hidden entries (the state
// directory) are skipped; the virtual root lists the named sources.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/adapter.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/tx_ops.h"

namespace ktmfs::fs {
namespace {

struct DirHandle;

// Every directory handle alive: one the kernel never released (a process had the directory
// open when a signal stopped the daemon, which then takes no more requests) is freed at the
// end (FreeUnreleasedDirHandles), not left behind.
std::mutex g_handles_mu;
std::unordered_set<DirHandle*> g_handles;

struct DirHandle {
  DirHandle() {
    std::lock_guard l(g_handles_mu);
    g_handles.insert(this);
  }
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  Inode* inode = nullptr;
  DIR* dp = nullptr;  // null for the virtual root
  off_t offset = 0;
  dirent* entry = nullptr;  // read but not yet returned (did not fit)
  // Opened inside a transaction: its view, read whole at opendir; offsets are positions.
  bool in_tx = false;
  Guid tx;
  std::vector<txops::TxDirEntry> tx_entries;
  std::mutex mu;
  ~DirHandle() {
    if (dp != nullptr) closedir(dp);
    std::lock_guard l(g_handles_mu);
    g_handles.erase(this);
  }
};

DirHandle* Handle(fuse_file_info* fi) {
  return reinterpret_cast<DirHandle*>(fi->fh);
}

// The kernel gets the handle `d`; if it refuses the reply, nobody will release it.
Reply OpenReply(fuse_file_info* fi, std::unique_ptr<DirHandle> d) {
  fi->fh = reinterpret_cast<uint64_t>(d.get());
  fi->cache_readdir = 0;
  return Reply::Open(*fi).IfRefused([handle = d.release()] { delete handle; });
}

Reply OpenCommitted(const Caller& caller, Filesystem& fs, fuse_file_info* fi,
                    std::unique_ptr<DirHandle> d) {
  if (!d->inode->is_virtual_root()) {
    IdentityScope id(caller, IdentityUse::kChecks, fs.kernel_checks());
    int fd = openat(d->inode->Fd().get(), ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0) return Reply::Error(errno);
    d->dp = fdopendir(fd);
    if (d->dp == nullptr) {
      int err = errno;
      close(fd);
      return Reply::Error(err);
    }
  }
  return OpenReply(fi, std::move(d));
}

Reply OpenInTx(Filesystem& fs, const TxGuard& tx, fuse_file_info* fi,
               std::unique_ptr<DirHandle> d) {
  d->in_tx = true;
  d->tx = tx.id();
  if (int err = txops::ListView(fs, tx, d->inode, &d->tx_entries); err != 0)
    return Reply::Error(err);
  return OpenReply(fi, std::move(d));
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = Fs(req);
  auto d = std::make_unique<DirHandle>();
  Inode* inode = d->inode = fs.Get(ino);
  Serve(
      req, inode, Access::kChange,
      [&] { return OpenCommitted(Caller::Of(req), fs, fi, std::move(d)); },
      [&](const TxGuard& tx) { return OpenInTx(fs, tx, fi, std::move(d)); });
}

// The virtual root: ".", "..", then one entry per source; offsets are positions.
Reply ReadVirtualRoot(fuse_req_t req, Filesystem& fs, size_t size, off_t off, bool plus) {
  std::vector<char> buf(size);
  size_t used = 0;
  const auto& sources = fs.layout().sources();
  for (size_t i = static_cast<size_t>(off); i < sources.size() + 2; i++) {
    const char* name = i == 0 ? "." : i == 1 ? ".." : sources[i - 2].name.c_str();
    size_t n;
    if (plus && i >= 2) {
      fuse_entry_param e;
      if (fs.Lookup(fs.inodes().root(), name, &e) != 0) continue;
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, i + 1);
      if (n > size - used) {
        fs.inodes().Forget(fs.Get(e.ino), 1);
        break;
      }
    } else if (plus) {
      fuse_entry_param e{};
      e.attr.st_ino = FUSE_ROOT_ID;
      e.attr.st_mode = S_IFDIR;
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, i + 1);
      if (n > size - used) break;
    } else {
      struct stat st {};
      st.st_ino = i < 2 ? FUSE_ROOT_ID : i;
      st.st_mode = S_IFDIR;
      n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, i + 1);
      if (n > size - used) break;
    }
    used += n;
  }
  buf.resize(used);
  return Reply::Bytes(std::move(buf));
}

// A transaction's listing. readdirplus gets entries without nodes (the kernel then looks each
// name up itself), so no lookup count is taken for a listing the kernel may drop.
// The reply's entries; the caller replies once it has let go of d->mu.
std::vector<char> ReadTxListing(fuse_req_t req, DirHandle* d, size_t size, off_t off, bool plus) {
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < d->tx_entries.size(); i++) {
    const auto& e = d->tx_entries[i];
    size_t n;
    if (plus) {
      fuse_entry_param p{};
      p.attr.st_ino = e.ino;
      p.attr.st_mode = e.type;
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &p,
                                 static_cast<off_t>(i + 1));
    } else {
      struct stat st {};
      st.st_ino = e.ino;
      st.st_mode = e.type;
      n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                            static_cast<off_t>(i + 1));
    }
    if (n > size - used) break;
    used += n;
  }
  buf.resize(used);
  return buf;
}

bool IsDotOrDotDot(const char* n) {
  return n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'));
}

// Fills buf from the backing directory, holding d->mu and `visible` (a pass on the directory);
// returns the error that stopped it.
int FillListing(fuse_req_t req, Filesystem& fs, DirHandle* d, size_t size, off_t off, bool plus,
                fstx::VisibilityGate::Pass& visible, std::vector<char>& buf, size_t* used_out) {
  if (off != d->offset) {
    seekdir(d->dp, off);
    d->entry = nullptr;
    d->offset = off;
  }
  size_t& used = *used_out;
  int err = 0;
  while (true) {
    if (d->entry == nullptr) {
      errno = 0;
      d->entry = readdir(d->dp);
      if (d->entry == nullptr) {
        err = errno;
        break;
      }
    }
    const char* name = d->entry->d_name;
    off_t next = d->entry->d_off;
    if (fs.IsHiddenName(d->inode, name)) {
      d->entry = nullptr;
      d->offset = next;
      continue;
    }
    size_t n;
    if (plus && !IsDotOrDotDot(name)) {
      fuse_entry_param e;
      int lerr = fs.Lookup(d->inode, name, &e);
      if (lerr == ENOENT) {  // removed since readdir saw it
        d->entry = nullptr;
        d->offset = next;
        continue;
      }
      if (lerr != 0) {
        err = lerr;
        break;
      }
      fstx::VisibilityGate::Key closed;
      if (!fs.ReadingCommittedEntry(visible, &e, &closed)) {
        // A commit's apply is changing it: the name goes without attributes (node id 0), which
        // the kernel then looks up by itself, waiting for the apply alone.
        fs.inodes().Forget(fs.Get(e.ino), 1);
        const struct stat found = e.attr;
        e = fuse_entry_param{};
        e.attr.st_ino = found.st_ino;
        e.attr.st_mode = found.st_mode & S_IFMT;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (n > size - used) {
        if (e.ino != 0) fs.inodes().Forget(fs.Get(e.ino), 1);
        break;
      }
    } else if (plus) {
      // "." and "..": no node, so no lookup count.
      fuse_entry_param e{};
      e.attr.st_ino = d->entry->d_ino;
      e.attr.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (n > size - used) break;
    } else {
      struct stat st {};
      st.st_ino = d->entry->d_ino;
      st.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
      if (n > size - used) break;
    }
    used += n;
    d->entry = nullptr;
    d->offset = next;
  }
  return err;
}

void ReadDir(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, fuse_file_info* fi,
             bool plus) {
  Filesystem& fs = Fs(req);
  DirHandle* d = Handle(fi);
  if (d->inode->is_virtual_root()) {
    Send(req, ReadVirtualRoot(req, fs, size, off, plus));
    return;
  }
  // Every reply below is sent after d->mu is let go: once the kernel has the reply, the caller
  // may close the directory, and RELEASEDIR, on another thread, deletes d (TSan under txcheck
  // saw the unlock write to freed memory).
  if (d->in_tx) {
    std::vector<char> listing;
    {
      std::lock_guard lock(d->mu);
      if (off == 0) {
        // rewinddir: read the view again, as a plain directory shows changes made meanwhile.
        if (TxGuard tx = fs.txs()->EnterById(d->tx)) {
          std::vector<txops::TxDirEntry> fresh;
          if (txops::ListView(fs, tx, d->inode, &fresh) == 0) d->tx_entries = std::move(fresh);
        }
      }
      listing = ReadTxListing(req, d, size, off, plus);
    }
    Send(req, Reply::Bytes(std::move(listing)));
    return;
  }
  std::vector<char> buf(size);
  size_t used = 0;
  int err = 0;
  {
    auto visible = fs.ReadingCommitted(d->inode);
    IdentityScope id(Caller::Of(req), IdentityUse::kChecks, fs.kernel_checks());
    std::lock_guard lock(d->mu);
    err = FillListing(req, fs, d, size, off, plus, visible, buf, &used);
  }
  // An error after some entries is reported by the next call, which starts with it.
  buf.resize(used);
  Send(req, err != 0 && used == 0 ? Reply::Error(err) : Reply::Bytes(std::move(buf)));
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDir(req, ino, size, off, fi, false);
}

void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDir(req, ino, size, off, fi, true);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  delete Handle(fi);
  Send(req, Reply::Ok());
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) {
  DirHandle* d = Handle(fi);
  if (d->dp == nullptr) {  // the virtual root, or a transaction's listing: commit makes it durable
    Send(req, Reply::Ok());
    return;
  }
  int fd = dirfd(d->dp);
  int r = datasync ? fdatasync(fd) : fsync(fd);
  Send(req, Reply::Error(r == 0 ? 0 : errno));
}

}  // namespace

void AddDirOps(fuse_lowlevel_ops* ops) {
  ops->opendir = OpOpendir;
  ops->readdir = OpReaddir;
  ops->readdirplus = OpReaddirplus;
  ops->releasedir = OpReleasedir;
  ops->fsyncdir = OpFsyncdir;
}

void FreeUnreleasedDirHandles() {
  std::unordered_set<DirHandle*> left;
  {
    std::lock_guard l(g_handles_mu);
    left.swap(g_handles);
  }
  for (DirHandle* d : left)
    delete d;
}

}  // namespace ktmfs::fs

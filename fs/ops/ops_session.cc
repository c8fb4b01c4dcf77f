// Connection set-up and the whole-filesystem operations: init (capabilities negotiated with the
// kernel), statfs and access.
#include <errno.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs/fuse/caller.h"
#include "fs/fuse/reply.h"
#include "fs/ops/filesystem.h"

namespace ktmfs::fs {
namespace {

void Want(fuse_conn_info* conn, unsigned cap) {
  if (conn->capable & cap) conn->want |= cap;
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  auto* fs = static_cast<Filesystem*>(userdata);
  const CacheOptions& cache = fs->options().cache;
  // POSIX ACLs: the kernel checks them (the mount has default_permissions) and caches them,
  // reading and writing them as system.posix_acl_* xattrs, which pass through to the backing
  // object (or the transaction's view, fs/ops/posix_acl.h). The umask is then the filesystem's to
  // apply, since a parent's default ACL replaces it: creates carry the caller's umask
  // (fs/fuse/caller.h), and the daemon itself runs with umask 0.
  Want(conn, FUSE_CAP_POSIX_ACL);
  Want(conn, FUSE_CAP_DONT_MASK);
  // Never the first HANDLE_KILLPRIV: the kernel would leave every clearing to the daemon
  // without saying which caller lacks CAP_FSETID. Its successor, HANDLE_KILLPRIV_V2, which
  // libfuse 3.14 cannot name, is taken through the daemon's channel (fs/fuse/kernel_channel.h).
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
  // The backing tree belongs to the daemon while mounted, so cached pages stay valid; a
  // changed mtime (our own writes) must not throw them away.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // Locks are handled by the kernel locally (see ktmfs(8)): every user goes through this mount.
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  // No FUSE_CAP_EXPORT_SUPPORT: node ids are inode addresses, valid only while the kernel
  // holds a lookup count, so they must not outlive it inside NFS file handles.
  Want(conn, FUSE_CAP_SPLICE_WRITE);
  Want(conn, FUSE_CAP_SPLICE_MOVE);
  Want(conn, FUSE_CAP_SPLICE_READ);
  Want(conn, FUSE_CAP_IOCTL_DIR);
  Want(conn, FUSE_CAP_PARALLEL_DIROPS);
  Want(conn, FUSE_CAP_ASYNC_READ);
  Want(conn, FUSE_CAP_ASYNC_DIO);
  Want(conn, FUSE_CAP_CACHE_SYMLINKS);
  if (cache.writeback) Want(conn, FUSE_CAP_WRITEBACK_CACHE);
  conn->max_write = 1u << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->time_gran = 1;
}

void OpStatfs(fuse_req_t req, fuse_ino_t ino) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root()) inode = fs.Get(FUSE_ROOT_ID);
  // The virtual root reports the first source's filesystem.
  NodeFd node_fd = inode->is_virtual_root() ? NodeFd() : inode->Fd();
  const int fd = node_fd.get();
  struct statvfs sv;
  int r = fd >= 0 ? fstatvfs(fd, &sv) : statvfs(fs.layout().sources()[0].path.c_str(), &sv);
  Send(req, r != 0 ? Reply::Error(errno) : Reply::Statfs(sv));
}

// Only sent without default_permissions: the check runs on the backing object as the caller.
void OpAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  Filesystem& fs = Fs(req);
  Inode* inode = fs.Get(ino);
  if (inode->is_virtual_root()) {
    Send(req, Reply::Error((mask & W_OK) ? EACCES : 0));
    return;
  }
  IdentityScope id(Caller::Of(req), IdentityUse::kChecks, fs.kernel_checks());
  int r = faccessat(AT_FDCWD, ProcPath(inode->Fd().get()).c_str(), mask, AT_EACCESS);
  Send(req, Reply::Error(r == 0 ? 0 : errno));
}

}  // namespace

void AddSessionOps(fuse_lowlevel_ops* ops) {
  ops->init = OpInit;
  ops->statfs = OpStatfs;
  ops->access = OpAccess;
}

}  // namespace ktmfs::fs

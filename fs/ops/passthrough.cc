#include "fs/ops/passthrough.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cassert>
#include <optional>
#include <string>

#include "fs/fuse/kernel_channel.h"
#include "fs/mount/daemon_log.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/setid.h"
#include "fs/ops/tx_ops.h"
#include "fs/tx/writer_identity.h"

namespace ktmfs::fs {
namespace {

fstx::ObjectKey KeyOf(const Inode* inode) {
  return fstx::ObjectKey{static_cast<uint64_t>(inode->dev), static_cast<uint64_t>(inode->ino)};
}

fstx::LockTable* LocksOf(Filesystem& fs, const Inode* inode) {
  if (fs.txs() == nullptr || inode->source_index < 0) return nullptr;
  return &fs.txs()->rm(inode->source_index).locks();
}

// The first refused registration, for the log: what the kernel's errno means here.
std::string WhyNoBacking(const Status& s) {
  std::string why;
  switch (s.code()) {
    case ELOOP:
      why =
          "the backing filesystem is stacked itself (overlayfs, or a FUSE mount passing "
          "through), deeper than the kernel stacks";
      break;
    case EPERM:
      why = "registering a backing file takes CAP_SYS_ADMIN";
      break;
    default:
      why = s.ToString();
  }
  return "passthrough unavailable, files are served by the daemon: " + why + " (" + s.message() +
         ")";
}

// Whether the file open at `fd` (read-only, -1 if it could not be opened: the kernel holds no
// file of it) is open for writing anywhere; closes `fd`.
bool OpenForWritingElsewhere(int fd) {
  if (fd < 0) return false;
  const bool open_for_writing = fstx::StillOpenForWriting(fd);
  close(fd);
  return open_for_writing;
}

}  // namespace

int PassthroughFiles::WriterRefusal(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  if (st.st_mode & (S_ISUID | S_ISGID)) return ETXTBSY;
  if (fgetxattr(fd, kCapabilityXattr, nullptr, 0) >= 0) return ETXTBSY;
  return 0;
}

PassthroughFiles::Decision PassthroughFiles::Open(Filesystem& fs, Inode* inode, int fd,
                                                  int open_flags, bool unsettled) {
  if (!KernelChannel::PassthroughTaken() || inode->type != S_IFREG) return {};
  if (inode->is_tx_version()) {
    // Files of a version node are passed through only inside its transaction (OpenCreated). One
    // still open from there leaves an open after its end nothing it could share: the kernel
    // would answer the mix with EIO.
    std::lock_guard l(mu_);
    return nodes_.count(inode) != 0 ? Decision{0, EBUSY} : Decision{};
  }
  // O_RDONLY|O_TRUNC is no writer: the daemon truncates (and clears set-id bits) itself, after
  // this decision and the open's own conflict check; the kernel writes nothing through it.
  const bool writer = (open_flags & O_ACCMODE) != O_RDONLY;
  // May wait for applied changes to become durable: before the lock, as every plain write does.
  const int held = writer ? txops::CheckNotHeld(fs, inode) : 0;
  std::lock_guard l(mu_);
  const int refusal = !writer ? 0 : held != 0 ? held : WriterRefusal(fd);
  return DecideLocked(fs, inode, fd, writer, refusal,
                      inode->open_handles.load() <= 1 && !unsettled);
}

PassthroughFiles::Decision PassthroughFiles::OpenCreated(Filesystem& fs, Inode* inode, int fd,
                                                         int open_flags, fstx::WriterIds owner,
                                                         const std::function<bool()>& setid) {
  assert(inode->is_tx_version() && inode->object.kind == fstx::ObjectId::Kind::kNew);
  if (!KernelChannel::PassthroughTaken() || inode->type != S_IFREG) return {};
  const bool writer = (open_flags & O_ACCMODE) != O_RDONLY;
  std::lock_guard l(mu_);
  return DecideLocked(fs, inode, fd, writer, writer && setid() ? ETXTBSY : 0,
                      inode->open_handles.load() <= 1, owner);
}

namespace {

// The kernel writes a passed-through file with the credentials the backing file was registered
// with, whoever writes: registered as the file's owner (writer_identity.h), its writes take
// space as the owner's would. A root-owned file's writers may so take the blocks ext4 keeps for
// root, as root; a writer the daemon serves itself is held to its own share. `owner`: the owner
// the transaction's view gives a file it created (its staged file is the daemon's), else the
// backing file's.
Result<int32_t> BackingOpenAsOwner(int fd, std::optional<fstx::WriterIds> owner) {
  if (!owner) {
    struct stat st;
    if (fstat(fd, &st) != 0) return Status::FromErrno("stat for passthrough");
    owner = fstx::WriterIds{st.st_uid, st.st_gid};
  }
  fstx::WriterIdentity as(owner->uid, owner->gid);
  return KernelChannel::BackingOpen(fd);
}

}  // namespace

PassthroughFiles::Decision PassthroughFiles::DecideLocked(Filesystem& fs, Inode* inode, int fd,
                                                          bool writer, int refusal, bool alone,
                                                          std::optional<fstx::WriterIds> owner) {
  mu_.AssertHeld();
  auto found = nodes_.find(inode);
  const bool must = found != nodes_.end();
  // Another open file of the node that is not passed through (or an open still deciding):
  // this one cannot be either.
  if (!must && !alone) return {};
  fstx::LockTable* locks = LocksOf(fs, inode);
  if (writer) {
    // Without the lock table nothing could keep transactions off the file.
    if (refusal == 0 && (locks == nullptr || !locks->AddOutsideWriter(KeyOf(inode)).ok()))
      refusal = EBUSY;
    if (refusal != 0) return must ? Decision{0, refusal} : Decision{};
  }
  Node node = must ? found->second : Node{};
  if (!must) {
    // The kernel opens the backing file anew for each passed-through file, with that file's
    // flags; the registered one only names it. Registered read-only, it does not count as a
    // writer in the lease probe (fstx::StillOpenForWriting) while readers keep it registered.
    const int ro = open(ProcPath(fd).c_str(), O_RDONLY | O_CLOEXEC);
    auto id = ro >= 0 ? BackingOpenAsOwner(ro, owner)
                      : Result<int32_t>(Status::FromErrno("reopen for passthrough"));
    if (ro >= 0) close(ro);
    if (!id.ok()) {
      if (writer) locks->RemoveOutsideWriter(KeyOf(inode));
      static std::atomic<bool> told{false};
      if (!told.exchange(true)) DaemonLog(LogLevel::kNotice, WhyNoBacking(id.status()));
      return {};
    }
    node.backing_id = *id;
  }
  ++node.files;
  nodes_[inode] = node;
  files_[fd] = File{inode, writer};
  return Decision{node.backing_id, 0};
}

bool PassthroughFiles::PassesThrough(const Inode* inode) {
  std::lock_guard l(mu_);
  return nodes_.count(inode) != 0;
}

void PassthroughFiles::Release(Filesystem& fs, Inode* inode, int fd) {
  std::lock_guard l(mu_);
  auto file = files_.find(fd);
  if (file == files_.end()) {  // served by the daemon
    close(fd);
    return;
  }
  assert(file->second.inode == inode);
  const bool writer = file->second.writer;
  // Forgotten before the number can be reused by another open.
  files_.erase(file);
  close(fd);
  auto found = nodes_.find(inode);
  assert(found != nodes_.end() && found->second.files > 0);
  if (writer) {
    // A mapping made through this open may still write the backing file (the daemon's own
    // descriptor, just closed, no longer counts); then the hold lingers.
    const bool still_open =
        OpenForWritingElsewhere(open(ProcPath(inode->Fd().get()).c_str(), O_RDONLY | O_CLOEXEC));
    if (fstx::LockTable* locks = LocksOf(fs, inode))
      locks->RemoveOutsideWriter(KeyOf(inode), still_open);
  }
  if (--found->second.files == 0) {
    // The kernel dropped its file before it sent the release, so no open file uses the id.
    KernelChannel::BackingClose(found->second.backing_id);
    nodes_.erase(found);
  }
}

void PassthroughFiles::WatchLingeringWriters(Filesystem& fs) {
  if (fs.txs() == nullptr) return;
  for (size_t i = 0; i < fs.layout().sources().size(); ++i) {
    fs.txs()->rm(static_cast<int>(i)).locks().SetWriterProbe([&fs](const fstx::ObjectKey& k) {
      // Without a committed node the kernel holds no file of the object: a mapping's file keeps
      // its node (the path it was opened by) alive.
      return OpenForWritingElsewhere(fs.inodes().ReopenObject(
          static_cast<dev_t>(k.dev), static_cast<ino_t>(k.ino), O_RDONLY | O_CLOEXEC));
    });
  }
}

int PassthroughFiles::WithoutWriters(Filesystem& fs, const Inode* inode,
                                     const std::function<int()>& change) {
  fstx::LockTable* locks = LocksOf(fs, inode);
  // A writer just closed is released by a request that may still be on its way; mu_, which
  // its release takes, is not held meanwhile.
  if (locks != nullptr) (void)locks->HasOutsideWriter(KeyOf(inode), /*grace=*/true);
  std::lock_guard l(mu_);
  if (locks != nullptr && locks->HasOutsideWriter(KeyOf(inode))) return ETXTBSY;
  return change();
}

}  // namespace ktmfs::fs

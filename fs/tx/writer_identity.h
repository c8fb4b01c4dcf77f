// The identity a daemon thread writes data with on a caller's behalf, so that the backing
// filesystem's space rules hold for the caller as they do natively.
//
// ext4 keeps a share of its blocks (5% by default) for root: a write may take them only if the
// writer's fsuid is the filesystem's resuid (0 unless set), its fsgid or groups hold the resgid,
// or it has CAP_SYS_RESOURCE. Quota limits, too, give way to CAP_SYS_RESOURCE. The daemon runs as
// root, so without this a user's write through the mount would fill the share kept for root,
// which the daemon's own log, and root's daemons, count on when the disk is full.
//
// While a WriterIdentity lives, the thread's fsuid and fsgid are the writer's and
// CAP_SYS_RESOURCE is out of its effective set; every other capability stays, so what a write
// does to set-id bits, and what an open may, is as before (the daemon decides those itself, see
// fs/ops/setid.h). Only the calling thread changes: setfsuid, setfsgid and capset are per
// thread. The thread has no supplementary groups meanwhile (the daemon's own might hold the
// resgid); the writer's are not fetched (a /proc read per write), so a writer in the resgid only
// through a supplementary group is refused the share, on the safe side.
#pragma once

#include <sys/types.h>

#include <vector>

namespace ktmfs::fstx {

// Whom a write request's data takes space as: its caller, except for pages the kernel writes
// back (fuse_file_info::writepage: a shared mmap(2) of a file the daemon serves, or
// -o writeback_cache). Those come with no caller, so they are written as the file's owner, as a
// passed-through file's writes are, or for a transaction's staged files as its owner.
struct WriterIds {
  uid_t uid;
  gid_t gid;
};
// The owner of the file `fd` (root's ids if it cannot be read).
WriterIds OwnerOf(int fd);

class WriterIdentity {
 public:
  // For a write by `uid`/`gid`. Nothing changes for root (uid 0), for no ids (-1), nor when
  // the daemon is not root (it has no share to give away then).
  WriterIdentity(uid_t uid, gid_t gid);
  explicit WriterIdentity(WriterIds ids) : WriterIdentity(ids.uid, ids.gid) {}
  ~WriterIdentity();
  WriterIdentity(const WriterIdentity&) = delete;
  WriterIdentity& operator=(const WriterIdentity&) = delete;

  // Whether the thread writes as the writer now.
  bool switched() const { return switched_; }
  // Whether a scope for `uid` would switch: callers skip the work that only decides how to
  // switch (root's writes, a daemon that is not root).
  static bool Switches(uid_t uid);

 private:
  bool switched_ = false;
  uid_t old_fsuid_ = 0;
  gid_t old_fsgid_ = 0;
  unsigned old_effective_[2] = {0, 0};
  std::vector<gid_t> old_groups_;
};

// Drops CAP_SYS_RESOURCE from the calling thread's effective set, returning the set it had
// (two words, as capget gives them) for RestoreEffectiveCaps; false if it could not.
bool DropSysResource(unsigned effective[2]);
void RestoreEffectiveCaps(const unsigned effective[2]);

}  // namespace ktmfs::fstx

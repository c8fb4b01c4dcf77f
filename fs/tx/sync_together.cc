#include "fs/tx/sync_together.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "fs/tx/beneath.h"
#include "fs/tx/owner_access.h"

namespace ktmfs::fstx {
namespace {

constexpr unsigned kRingEntries = 64;

}  // namespace

SyncTogether::SyncTogether(bool use_ring) {
  have_ring_ = use_ring && io_uring_queue_init(kRingEntries, &ring_, 0) == 0;
}

SyncTogether::~SyncTogether() {
  if (have_ring_) io_uring_queue_exit(&ring_);
}

// fsyncs `fds` (paths for messages), up to kRingEntries at a time in flight.
Status SyncTogether::FsyncAll(const std::vector<int>& fds, const std::vector<std::string>& paths) {
  if (!have_ring_ || fds.size() == 1) {
    for (size_t i = 0; i < fds.size(); i++)
      if (::fsync(fds[i]) != 0) return Status::FromErrno(errno, "fsync " + paths[i]);
    return Status::Ok();
  }
  for (size_t start = 0; start < fds.size(); start += kRingEntries) {
    size_t end = std::min(fds.size(), start + kRingEntries);
    for (size_t i = start; i < end; i++) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_fsync(sqe, fds[i], 0);
      io_uring_sqe_set_data64(sqe, i);
    }
    int submitted = io_uring_submit(&ring_);
    if (submitted < 0) return Status::FromErrno(-submitted, "submitting fsyncs");
    // Every completion is reaped before returning, errors or not: the ring is used again.
    Status s;
    for (int n = 0; n < submitted; n++) {
      io_uring_cqe* cqe = nullptr;
      int rc;
      do {
        rc = io_uring_wait_cqe(&ring_, &cqe);
      } while (rc == -EINTR);
      if (rc < 0) return Status::FromErrno(-rc, "waiting for fsyncs");
      if (cqe->res < 0 && s.ok())
        s = Status::FromErrno(-cqe->res, "fsync " + paths[cqe->user_data]);
      io_uring_cqe_seen(&ring_, cqe);
    }
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status SyncTogether::Sync(const std::vector<const AppliedChanges*>& changes) {
  std::set<std::string> files, dirs, moved_away_roots;
  // Names below a backing root are reopened beneath it, as apply reached them (beneath.h):
  // opening even read-only what a symlink planted since leads to (a device, say) is not ours.
  std::map<std::string, std::unique_ptr<BackingRoot>> roots;
  auto open_beneath = [&](const std::string& root, const std::string& path, int flags) {
    const std::string prefix = root + "/";
    if (path.compare(0, prefix.size(), prefix) != 0) return OpenAsOwner(path, flags);
    auto& r = roots[root];
    if (!r) r = std::make_unique<BackingRoot>(root);
    BackingName name = r->Name(path.substr(prefix.size()));
    if (name.error() != 0) {
      errno = name.error();
      return -1;
    }
    return OpenAsOwner(name.path(), flags);
  };
  // Every file first, then every directory, each once.
  struct Target {
    const std::string* root;
    const std::string* path;
    bool dir;
  };
  std::vector<Target> targets;
  for (const AppliedChanges* c : changes)
    for (const auto& f : c->files)
      if (files.insert(f).second) targets.push_back({&c->backing_root, &f, false});
  for (const AppliedChanges* c : changes)
    for (const auto& d : c->dirs)
      if (dirs.insert(d).second) targets.push_back({&c->backing_root, &d, true});
  // Opened, synced and closed a ring's worth at a time: a commit may change more files than
  // the daemon may have open (20,000 files of one commit failed with EMFILE here, and the RM
  // then refused changes until the next mount).
  Status s;
  for (size_t start = 0; s.ok() && start < targets.size(); start += kRingEntries) {
    std::vector<int> fds;
    std::vector<std::string> names;
    for (size_t i = start; i < std::min(targets.size(), start + kRingEntries); i++) {
      const Target& t = targets[i];
      int fd = open_beneath(*t.root, *t.path, O_RDONLY | O_NOFOLLOW | (t.dir ? O_DIRECTORY : 0));
      if (fd >= 0) {
        fds.push_back(fd);
        names.push_back(*t.path);
        continue;
      }
      // A directory moved or gone since (within its transaction), or either replaced behind
      // the daemon's back (by a symlink; a file by a FIFO or a device, which OpenAsOwner
      // refuses with ESTALE rather than open): its whole filesystem is synced instead. What
      // apply wrote into a file replaced since is in no name any more.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || (!t.dir && errno == ESTALE)) {
        moved_away_roots.insert(*t.root);
        continue;
      }
      s = Status::FromErrno(errno, "open " + *t.path);
      break;
    }
    if (s.ok()) s = FsyncAll(fds, names);
    for (int fd : fds)
      ::close(fd);
  }
  for (const auto& root : moved_away_roots) {
    if (!s.ok()) break;
    int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + root);
    if (::syncfs(fd) != 0) s = Status::FromErrno(errno, "syncfs " + root);
    ::close(fd);
  }
  return s;
}

}  // namespace ktmfs::fstx

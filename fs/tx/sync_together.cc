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
  std::vector<int> fds;
  std::vector<std::string> names;
  Status s;
  auto open_one = [&](const std::string& root, const std::string& path, int flags) {
    int fd = open_beneath(root, path, O_RDONLY | O_NOFOLLOW | flags);
    if (fd >= 0) {
      fds.push_back(fd);
      names.push_back(path);
      return true;
    }
    return false;
  };
  for (const AppliedChanges* c : changes) {
    for (const auto& f : c->files) {
      if (!s.ok()) break;
      if (!files.insert(f).second) continue;
      if (!open_one(c->backing_root, f, 0)) s = Status::FromErrno(errno, "open " + f);
    }
  }
  for (const AppliedChanges* c : changes) {
    if (!s.ok()) break;
    for (const auto& d : c->dirs) {
      if (!dirs.insert(d).second) continue;  // opened for an earlier transaction of the batch
      if (open_one(c->backing_root, d, O_DIRECTORY)) continue;
      // Moved or gone since (within its transaction), or replaced by a symlink behind the
      // daemon's back: its whole filesystem is synced instead.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) {
        moved_away_roots.insert(c->backing_root);
        continue;
      }
      s = Status::FromErrno(errno, "open " + d);
      break;
    }
  }
  if (s.ok()) s = FsyncAll(fds, names);
  for (int fd : fds)
    ::close(fd);
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

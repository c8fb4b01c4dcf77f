// Makes the changes of several applied transactions durable at once: every file and directory
// they changed is fsynced once, all in flight together through io_uring, so the filesystem can
// share its journal commits among them (one after another, each fsync would wait for its own).
#pragma once

#include <liburing.h>

#include <vector>

#include "fs/tx/apply.h"
#include "log/status.h"

namespace ktmfs::fstx {

class SyncTogether {
 public:
  // The ring is set up once: a sync thread keeps one for its life. Without io_uring (seccomp,
  // an old kernel) the fsyncs run one after another.
  explicit SyncTogether(bool use_ring = true);
  ~SyncTogether();
  SyncTogether(const SyncTogether&) = delete;
  SyncTogether& operator=(const SyncTogether&) = delete;

  Status Sync(const std::vector<const AppliedChanges*>& changes);

 private:
  Status FsyncAll(const std::vector<int>& fds, const std::vector<std::string>& paths);

  io_uring ring_;
  bool have_ring_ = false;
};

}  // namespace ktmfs::fstx

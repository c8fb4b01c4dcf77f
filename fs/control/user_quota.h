// What one user's live transactions may hold of the daemon, so that one user cannot exhaust it
// for everyone: how many transactions, how many bytes the daemon keeps in memory for them (each
// op's record and overlay entry, small writes' data, small xattr values; see
// FsResourceManager::MemoryKept), and how many descriptors they keep open (one
// per existing file they changed, which holds the object until the transaction ends). The caps
// come from -o max_user_transactions, -o max_user_memory and -o max_user_descriptors; root is
// not capped. A user past a cap gets the error for it (EMFILE, ENOSPC) while everyone else
// goes on.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>

#include "fs/mount/options.h"
#include "log/status.h"

namespace ktmfs::fs {

class UserQuota {
 public:
  explicit UserQuota(UserCaps caps);

  // Counts one more live transaction of `uid`; EMFILE (and nothing counted) past the cap.
  Status TakeTransaction(uid_t uid);
  void GiveTransaction(uid_t uid);
  // Counts `bytes` more of memory for `uid`; ENOSPC (and nothing counted) past the cap.
  Status TakeMemory(uid_t uid, uint64_t bytes);
  void GiveMemory(uid_t uid, uint64_t bytes);
  // Counts one more descriptor held for `uid`; EMFILE (and nothing counted) past the cap.
  Status TakeDescriptor(uid_t uid);
  void GiveDescriptors(uid_t uid, uint64_t n);

  struct Usage {
    uint32_t transactions = 0;
    uint64_t memory = 0;
    uint64_t descriptors = 0;
    bool empty() const { return transactions == 0 && memory == 0 && descriptors == 0; }
  };
  Usage UsageOf(uid_t uid) const;
  // Descriptors counted for every user, root included.
  uint64_t TotalDescriptors() const;

  const UserCaps& caps() const { return caps_; }

 private:
  const UserCaps caps_;
  mutable std::mutex mu_;
  std::map<uid_t, Usage> usage_;  // users with something counted
  uint64_t total_descriptors_ = 0;
  uint64_t users_descriptors_ = 0;  // all but root's
};

}  // namespace ktmfs::fs

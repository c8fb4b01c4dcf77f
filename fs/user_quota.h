// What one user's live transactions may hold of the daemon, so that one user cannot exhaust it
// for everyone: how many transactions, and how many bytes of their data the daemon keeps in
// memory (extended attribute values set inside them). The caps come from -o
// max_user_transactions and -o max_user_memory; root is not capped. A user past a cap gets the
// error for it (EMFILE, ENOSPC) while everyone else goes on.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>

#include "log/status.h"

namespace ktmfs::fs {

struct UserCaps {
  uint32_t transactions = 0;  // live transactions per user; 0: no cap
  uint64_t memory = 0;        // bytes per user; 0: no cap
};

class UserQuota {
 public:
  explicit UserQuota(UserCaps caps) : caps_(caps) {}

  // Counts one more live transaction of `uid`; EMFILE (and nothing counted) past the cap.
  Status TakeTransaction(uid_t uid);
  void GiveTransaction(uid_t uid);
  // Counts `bytes` more of memory for `uid`; ENOSPC (and nothing counted) past the cap.
  Status TakeMemory(uid_t uid, uint64_t bytes);
  void GiveMemory(uid_t uid, uint64_t bytes);

  struct Usage {
    uint32_t transactions = 0;
    uint64_t memory = 0;
  };
  Usage UsageOf(uid_t uid) const;

 private:
  const UserCaps caps_;
  mutable std::mutex mu_;
  std::map<uid_t, Usage> usage_;  // users with something counted
};

}  // namespace ktmfs::fs

// Made-up callers and objects for the tests of the daemon's own permission rules
// (fs/ops/permission.h, fs/ops/posix_acl.h): no users, processes or files needed.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <vector>

#include "fs/ops/permission.h"

namespace ktmfs::fs::made_up {

inline constexpr uint64_t kRootCaps = ~uint64_t{0} >> 23;  // CAP_CHOWN .. CAP_CHECKPOINT_RESTORE

inline Requester User(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}, uint64_t caps = 0) {
  return Requester(
      uid, gid, [groups] { return groups; }, [caps] { return caps; });
}

inline Requester Root() {
  return User(0, 0, {}, kRootCaps);
}

inline struct stat Obj(mode_t mode, uid_t uid, gid_t gid) {
  struct stat st {};
  st.st_mode = mode;
  st.st_uid = uid;
  st.st_gid = gid;
  return st;
}

}  // namespace ktmfs::fs::made_up

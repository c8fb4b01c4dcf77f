// What one mount is configured to do: the daemon's own options, as the command line
// (fs/daemon/command_line.h) or a test sets them. Plain data: parsing them is the daemon's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ktmfs::fs {

// What one user's live transactions may hold of the daemon (fs/control/user_quota.h).
struct UserCaps {
  uint32_t transactions = 0;  // live transactions per user; 0: no cap
  uint64_t memory = 0;        // bytes per user; 0: no cap
  // Descriptors per user; 0: no cap; kQuarterOfFileLimit: a quarter of the daemon's file limit
  // when the quota is made.
  static constexpr uint64_t kQuarterOfFileLimit = UINT64_MAX;
  uint64_t descriptors = 0;
  // Descriptors of all users but root together, so that many users at their caps still leave
  // root room: half the daemon's file limit when the quota is made (0 in tests: no cap).
  uint64_t all_users_descriptors = 0;
};

enum class LogMode { kMultiplexed, kDedicated };

struct CacheOptions {
  // Names are looked up again on every use: a commit can change any name at one instant, and
  // the only way to take back a name the kernel cached (FUSE_NOTIFY_INVAL_ENTRY) waits for the
  // directory's lock, which a request still in the daemon may hold, so a daemon killed then
  // could never exit. Attributes and pages are invalidated without any lock (see ktmfs(8)).
  double entry_timeout = 0.0;
  double attr_timeout = 86400.0;
  double negative_timeout = 0.0;
  bool writeback = false;
  bool keep_cache = true;
};

struct Options {
  std::string source;      // as given: "/srv/app" or "data=/srv/data:conf=/etc/app"
  std::string mountpoint;  // absolute
  std::string state_dir;   // empty: <first backing dir>/.ktmfs
  LogMode log_mode = LogMode::kMultiplexed;
  // The most space each log may take (-o log_size=); 0: the log's default (1 GiB). Applies when
  // a log is created: an existing log keeps the size it was made with.
  uint64_t log_size = 0;
  CacheOptions cache;
  // What one user's live transactions may hold of the daemon (-o max_user_transactions=,
  // -o max_user_memory=, -o max_user_descriptors=; see user_quota.h). Root is not capped.
  UserCaps user_caps{128, 256ull << 20, UserCaps::kQuarterOfFileLimit};
  // -o node_descriptors=N: descriptors kept open for objects the kernel knows; 0: half the
  // daemon's soft file limit (see inode_table.h).
  uint64_t node_descriptors = 0;
  bool foreground = false;
  bool debug = false;
  bool single_thread = false;
  bool clone_fd = false;
  unsigned max_idle_threads = 0;  // 0: libfuse's default
  unsigned max_threads = 0;
  // -o nokillpriv_v2: leave set-id clearing on write to the kernel even when it offers
  // FUSE_HANDLE_KILLPRIV_V2 (fs/fuse/kernel_channel.h).
  bool killpriv_v2 = true;
  // -o nopassthrough: serve every read and write in the daemon even when the kernel offers
  // FUSE_PASSTHROUGH (fs/ops/passthrough.h).
  bool passthrough = true;
  // -o nouring: keep every request on /dev/fuse even when the kernel offers FUSE over io_uring
  // (fs/fuse/fuse_ring.h); -o uring_entries=N: entries (and threads) per CPU queue.
  bool uring = true;
  unsigned uring_entries = 4;
  bool default_permissions = false;
  bool allow_other = false;
  bool nonempty = false;   // -o nonempty: hiding the mountpoint's contents is intended
  bool read_only = false;  // -o ro (the last of ro and rw counts)
  // -o remount: remount the running mount at `mountpoint` (read_only or not) instead of serving.
  bool remount = false;
  // From $KTMFS_FAULT_LOG_SYNC, for tests of real mounts (builds with -Dfault_hooks=true only):
  // while this file exists, the log's next durable write is done and then fails with EIO.
  std::string fault_log_sync;
  // From $KTMFS_FAULT_APPLY_PAUSE (the same builds only): while this file exists, a commit's
  // apply waits before its next change, with the objects it changes closed to readers; if the
  // file holds text, only before a change whose description contains it, while it still does.
  std::string fault_apply_pause;
  // From $KTMFS_FAULT_RELEASE_DELAY_MS (the same builds only): the daemon serves each RELEASE of
  // a file opened inside a transaction this many milliseconds late, as a kernel that sends it
  // after the commit that follows the close may.
  unsigned fault_release_delay_ms = 0;
  // What is left for fuse_session_new (argv[0], -o fsname=..., libfuse options).
  std::vector<std::string> fuse_args;
};

}  // namespace ktmfs::fs

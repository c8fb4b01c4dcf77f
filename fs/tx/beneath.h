// Names in a backing directory as apply and recovery reach them: never through a symlink and
// never outside the backing root. Apply runs as the daemon (root, usually) and finds what a
// transaction changed by path, in a tree every user may change; the conflict rules forbid
// swapping a directory under a live transaction, and this is the defence behind them: a
// directory replaced by a symlink behind the daemon's back (by an administrator, or by a
// process working on the backing directory directly) makes apply fail, not write elsewhere.
//
// The directory of a name is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS) from a descriptor of the root; the name itself is then reached as
// /proc/self/fd/<dir>/<leaf>, so path-based calls that do not follow a final symlink (lstat,
// rename, link, lchown, utimensat with AT_SYMLINK_NOFOLLOW, open with O_NOFOLLOW, l*xattr)
// keep working unchanged and act on that directory whatever happens to the path meanwhile.
#pragma once

#include <string>

#include "log/status.h"

namespace ktmfs::fstx {

// The /proc/self/fd link of `fd`: opening or calling through it acts on the object the
// descriptor holds, whatever its names are now.
std::string FdPath(int fd);

// Why a backing name cannot be reached, for messages: `err` said plainly for the two errors
// resolution gives (ELOOP, EXDEV), strerror for the rest.
std::string UnreachableReason(int err);

class BackingName {
 public:
  // `rel` below the root open as `root_fd` (a descriptor of `root`, for messages). The
  // resolution's error, if any, is kept: every call through path() then fails with it.
  static BackingName Resolve(int root_fd, const std::string& root, const std::string& rel);
  // A name in the daemon's own state directory, which no user can change: used as is.
  static BackingName Trusted(const std::string& path);

  BackingName(BackingName&& other) noexcept;
  BackingName& operator=(BackingName&&) = delete;
  BackingName(const BackingName&) = delete;
  ~BackingName();

  // For system calls; valid while this object lives.
  const char* path() const { return path_.c_str(); }
  // root/rel: for messages and for the sync step, which reopens it later.
  const std::string& shown() const { return shown_; }
  // 0, or the errno that resolving its directory failed with (ELOOP: a symlink on the way;
  // EXDEV: a path leading out of the root).
  int error() const { return error_; }
  Status ErrorStatus(const std::string& what) const;

  // chmod(2) of the name itself: a symlink (which has no mode) is left alone, and a name
  // swapped for a symlink meanwhile is not followed.
  int ChmodNoFollow(unsigned mode) const;

 private:
  BackingName() = default;
  int dir_fd_ = -1;
  int error_ = 0;
  std::string leaf_;
  std::string path_;
  std::string shown_;
};

// A descriptor (O_PATH) of a backing root, for BackingName::Resolve.
class BackingRoot {
 public:
  explicit BackingRoot(const std::string& root);
  ~BackingRoot();
  BackingRoot(const BackingRoot&) = delete;
  BackingRoot& operator=(const BackingRoot&) = delete;
  BackingName Name(const std::string& rel) const { return BackingName::Resolve(fd_, root_, rel); }
  const std::string& path() const { return root_; }

 private:
  std::string root_;
  int fd_ = -1;  // -1 if the root cannot be opened: every name then fails with EBADF
};

}  // namespace ktmfs::fstx

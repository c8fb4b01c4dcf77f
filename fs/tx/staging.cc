#include "fs/tx/staging.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "fs/tx/direct_io.h"
#include "fs/tx/overwrite_in_place.h"

namespace ktmfs::fstx {
namespace {

Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path);
  int rc = ::fsync(fd);
  Status s = rc == 0 ? Status::Ok() : Status::FromErrno("fsync " + path);
  ::close(fd);
  return s;
}

bool ValidName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

Status PreadFull(int fd, std::byte* out, size_t len, uint64_t offset, size_t* got,
                 const std::string& what) {
  *got = 0;
  while (*got < len) {
    ssize_t n = ::pread(fd, out + *got, len - *got, static_cast<off_t>(offset + *got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + what);
    }
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// mkdir -p: the staging root's parents (<state>/staging) may not exist on a first mount.
Status MakeDirs(const std::string& path) {
  if (path.empty() || path == "/" || path == ".") return Status::Ok();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(MakeDirs(Parent(path)));
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return Status::FromErrno("mkdir " + path);
  return Status::Ok();
}

namespace {

// Unlinks bottom-up; durability is the caller's business (one fsync of the top's parent: the
// contents of a removed directory need no durable removal of their own). `empty_files`: a
// regular file with no other name is truncated first, so its space comes back even while a
// descriptor still holds it.
Status RemoveTreeUnsynced(const std::string& path, bool empty_files = false) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0)
    return errno == ENOENT ? Status::Ok() : Status::FromErrno("stat " + path);
  if (S_ISDIR(st.st_mode)) {
    DIR* d = ::opendir(path.c_str());
    if (!d) return Status::FromErrno("opendir " + path);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    for (const auto& n : names)
      KTMFS_RETURN_IF_ERROR(RemoveTreeUnsynced(path + "/" + n, empty_files));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("rmdir " + path);
    return Status::Ok();
  }
  if (empty_files && S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_size > 0 &&
      ::truncate(path.c_str(), 0) != 0 && errno != ENOENT)
    return Status::FromErrno("truncate " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("unlink " + path);
  return Status::Ok();
}

}  // namespace

Status RemoveTreeLazily(const std::string& path) {
  return RemoveTreeUnsynced(path);
}

Status DiscardTree(const std::string& path) {
  return RemoveTreeUnsynced(path, /*empty_files=*/true);
}

Status RemoveTree(const std::string& path) {
  KTMFS_RETURN_IF_ERROR(RemoveTreeUnsynced(path));
  return FsyncPath(Parent(path));
}

StagedFile::StagedFile(TxStaging* staging, std::string name, std::string path, int committed_fd,
                       std::optional<ObjectHandle> committed_handle, int committed_mount_fd,
                       uint64_t committed_size)
    : staging_(staging),
      name_(std::move(name)),
      path_(std::move(path)),
      existing_(committed_fd >= 0),
      committed_fd_(committed_fd),
      committed_handle_(std::move(committed_handle)),
      committed_mount_fd_(committed_mount_fd),
      size_(committed_size),
      committed_limit_(committed_size) {}

StagedFile::~StagedFile() {
  {
    // No one else can reach the file now; held for CloseLocked's rule (and its asserts).
    std::lock_guard lock(mu_);
    CloseLocked();
    if (committed_handle_) {
      CloseCommittedLocked();
    } else if (committed_fd_ >= 0) {
      ::close(committed_fd_);
    }
  }
}

void StagedFile::CloseLocked() const {
  mu_.AssertHeld();
  if (fd_ >= 0) staging_->Closed(this, TxStaging::kStaged);
  CloseFdsLocked();
}

Result<int> StagedFile::CommittedFdLocked() const {
  mu_.AssertHeld();
  assert(existing_);
  if (committed_fd_ >= 0) {
    if (committed_handle_) staging_->Used(this, TxStaging::kCommitted);
    return committed_fd_;
  }
  assert(committed_handle_);
  int fd = committed_handle_->Open(committed_mount_fd_, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && staging_->ShedCommitted())
    fd = committed_handle_->Open(committed_mount_fd_, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    // ESTALE: removed behind the mount's back (through the mount, the transaction's lock on it
    // keeps it); the transaction can no longer read what it did not write of it.
    return Status::FromErrno("open again the committed file of " + path_ +
                             (errno == ESTALE ? " (removed outside the mount)" : ""));
  }
  committed_fd_ = fd;
  staging_->Opened(this, TxStaging::kCommitted);
  return committed_fd_;
}

void StagedFile::CloseCommittedLocked() const {
  mu_.AssertHeld();
  assert(committed_handle_);
  if (committed_fd_ < 0) return;
  staging_->Closed(this, TxStaging::kCommitted);
  CloseCommittedUnlistedLocked();
}

void StagedFile::CloseCommittedUnlistedLocked() const {
  mu_.AssertHeld();
  ::close(committed_fd_);
  committed_fd_ = -1;
}

bool StagedFile::StagesObject(const std::optional<ObjectHandle>& handle) const {
  return !committed_handle_ || !handle || *committed_handle_ == *handle;
}

bool StagedFile::on_disk() const {
  std::lock_guard lock(mu_);
  return spilled_;
}

void StagedFile::CloseFdsLocked() const {
  mu_.AssertHeld();
  // The queued writes use the direct descriptor; a failure among them stays in failed_.
  (void)DrainLocked();
  queue_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  // A refusal of O_DIRECT (-1) stays known; an open one goes with the file's descriptor.
  if (direct_fd_ >= 0) {
    ::close(direct_fd_);
    direct_fd_ = kNotOpened;
  }
}

Result<int> StagedFile::FdLocked() const {
  mu_.AssertHeld();
  assert(spilled_);
  if (fd_ >= 0) {
    staging_->Used(this, TxStaging::kStaged);
    return fd_;
  }
  auto dir = staging_->DirFd();
  if (!dir.ok()) return dir.status();
  int fd = ::openat(*dir, name_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open staged file " + path_);
  fd_ = fd;
  staging_->Opened(this, TxStaging::kStaged);
  return fd_;
}

Status StagedFile::SpillLocked() {
  mu_.AssertHeld();
  if (spilled_) return Status::Ok();
  auto dir = staging_->DirFd();
  if (!dir.ok()) return dir.status();
  // O_EXCL: a staged name is created once; finding one already there means the caller lost
  // track of it, which must not silently mix two histories.
  int fd = ::openat(*dir, name_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create staged file " + path_);
  Status s;
  if (size_ > 0 && ::ftruncate(fd, static_cast<off_t>(size_)) != 0)
    s = Status::FromErrno("size " + path_);
  for (const Extent& e : written_.extents()) {
    if (!s.ok()) break;
    s = WriteAt(fd, -1, std::span<const std::byte>(memory_.data() + e.offset, e.length), e.offset,
                "staged file " + path_);
  }
  if (!s.ok()) {
    ::close(fd);
    ::unlinkat(*dir, name_.c_str(), 0);
    return s;
  }
  fd_ = fd;
  spilled_ = true;
  staging_->Opened(this, TxStaging::kStaged);
  memory_.clear();
  memory_.shrink_to_fit();
  return Status::Ok();
}

Status StagedFile::Write(uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mu_);
  KTMFS_RETURN_IF_ERROR(SpillLocked());
  return WriteFd(offset, data, /*may_queue=*/true);
}

Status StagedFile::WriteLogged(uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mu_);
  const uint64_t end = offset + data.size();
  if (!spilled_) {
    const uint64_t grow = end > memory_.size() ? end - memory_.size() : 0;
    if (end <= kMemoryExtent && (grow == 0 || staging_->TakeMemory(grow))) {
      if (grow > 0) memory_.resize(end);
      std::memcpy(memory_.data() + offset, data.data(), data.size());
      written_.Add(offset, data.size());
      size_ = std::max(size_, end);
      return Status::Ok();
    }
    KTMFS_RETURN_IF_ERROR(SpillLocked());
  }
  // Not queued: its data is in its record, so prepare may not sync this file (nor wait for it).
  return WriteFd(offset, data, /*may_queue=*/false);
}

Status StagedFile::Settle() const {
  std::lock_guard lock(mu_);
  return DrainLocked();
}

Status StagedFile::DrainLocked() const {
  mu_.AssertHeld();
  if (queue_) {
    Status s = queue_->Drain();
    if (!s.ok() && failed_.ok()) failed_ = s;
  }
  return failed_;
}

Result<bool> StagedFile::QueueLocked(int fd, uint64_t offset, std::span<const std::byte> data) {
  mu_.AssertHeld();
  const uint64_t length = data.size();
  if (queue_refused_ || direct_fd_ < 0 || length < kQueueMin || offset % kDirectAlign != 0 ||
      length % kDirectAlign != 0 || length > AsyncDirectWriter::kMaxWrite)
    return false;
  if (!queue_) {
    queue_ = AsyncDirectWriter::Create("staged file " + path_);
    if (!queue_) {
      queue_refused_ = true;
      return false;
    }
  }
  // The space first, so that a full filesystem refuses this write rather than a later commit;
  // and, for writes that follow each other, ahead of it, twice as far each time up to
  // kAllocateAhead, but not past the end on disk: the file must stay exactly its content (apply
  // may put it in place), and cutting it back would wait for the device.
  bool allocated = true;
  for (const auto& p : allocated_.Split(offset, length))
    if (!p.written) allocated = false;
  if (!allocated) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return false;  // the write, made now, says what is wrong
    allocate_ahead_ = offset == next_offset_ ? std::clamp(allocate_ahead_ * 2, length,
                                                          std::max(length, kAllocateAhead))
                                             : length;
    const uint64_t end = std::max(
        offset + length, std::min(offset + allocate_ahead_, static_cast<uint64_t>(st.st_size)));
    if (::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(end - offset)) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOSYS) queue_refused_ = true;
      return false;  // the write, made now, says whether it fits
    }
    allocated_.Add(offset, end - offset);
  }
  next_offset_ = offset + length;
  auto queued = queue_->Queue(fd, direct_fd_, offset, data);
  if (!queued.ok()) failed_ = queued.status();
  return queued;
}

Status StagedFile::WriteFd(uint64_t offset, std::span<const std::byte> data, bool may_queue) {
  KTMFS_RETURN_IF_ERROR(failed_);
  auto fd = FdLocked();
  if (!fd.ok()) return fd.status();
  if (direct_fd_ == kNotOpened && data.size() >= kDirectAlign)
    direct_fd_ = ReopenDirect(*fd, O_WRONLY | O_CLOEXEC);
  auto queued = may_queue ? QueueLocked(*fd, offset, data) : Result<bool>(false);
  if (!queued.ok()) return queued.status();
  if (!*queued) {
    // Written now: after the queued writes, which it might overlap.
    KTMFS_RETURN_IF_ERROR(DrainLocked());
    Status s = WriteAt(*fd, direct_fd_, data, offset, "staged file " + path_);
    if (!s.ok()) {
      // Part of it may be in the file. Past the size it would be bytes no record accounts for,
      // which a commit that makes this file the new content (replacement.h) would keep.
      struct stat st;
      if (::fstat(*fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > size_ &&
          ::ftruncate(*fd, static_cast<off_t>(size_)) == 0)
        allocated_.ClipTo(size_);
      return s;
    }
  }
  written_.Add(offset, data.size());
  size_ = std::max(size_, offset + data.size());
  return Status::Ok();
}

Result<size_t> StagedFile::Read(uint64_t offset, std::span<std::byte> out) const {
  std::lock_guard lock(mu_);
  if (offset >= size_) return size_t{0};
  uint64_t len = std::min<uint64_t>(out.size(), size_ - offset);
  for (const auto& p : written_.Split(offset, len)) {
    std::byte* dst = out.data() + (p.offset - offset);
    size_t got = 0;
    if (p.written && !spilled_) {
      std::memcpy(dst, memory_.data() + p.offset, p.length);
      got = p.length;
    } else if (p.written) {
      KTMFS_RETURN_IF_ERROR(DrainLocked());
      auto fd = FdLocked();
      if (!fd.ok()) return fd.status();
      KTMFS_RETURN_IF_ERROR(PreadFull(*fd, dst, p.length, p.offset, &got, path_));
    } else if (existing_ && p.offset < committed_limit_) {
      size_t want = static_cast<size_t>(std::min(p.length, committed_limit_ - p.offset));
      auto committed = CommittedFdLocked();
      if (!committed.ok()) return committed.status();
      KTMFS_RETURN_IF_ERROR(
          PreadFull(*committed, dst, want, p.offset, &got, "committed file of " + path_));
    }
    // Whatever neither file supplied (holes, bytes past a truncate) reads as zeros.
    std::memset(dst + got, 0, p.length - got);
  }
  return static_cast<size_t>(len);
}

Status StagedFile::Truncate(uint64_t size) {
  std::lock_guard lock(mu_);
  if (spilled_) {
    KTMFS_RETURN_IF_ERROR(DrainLocked());
    auto fd = FdLocked();
    if (!fd.ok()) return fd.status();
    if (::ftruncate(*fd, static_cast<off_t>(size)) != 0)
      return Status::FromErrno("truncate " + path_);
    allocated_.ClipTo(size);
  }
  // Held in memory, the bytes past `size` stay but no extent covers them any more.
  written_.ClipTo(size);
  committed_limit_ = std::min(committed_limit_, size);
  size_ = size;
  return Status::Ok();
}

bool StagedFile::CommittedHasBlocks(uint64_t offset, uint64_t length) const {
  std::lock_guard l(mu_);
  if (!existing_ || offset + length > committed_limit_) return false;
  auto fd = CommittedFdLocked();
  struct stat st;
  return fd.ok() && ::fstat(*fd, &st) == 0 &&
         HasBlocks(*fd, static_cast<uint64_t>(st.st_size), offset, length);
}

Status StagedFile::StatCommitted(struct stat* st) const {
  if (!existing_) return Status::Error(ENOENT, "no committed file under " + path_);
  std::lock_guard l(mu_);
  auto fd = CommittedFdLocked();
  if (!fd.ok()) return fd.status();
  if (::fstat(*fd, st) != 0) return Status::FromErrno("committed file of " + path_);
  return Status::Ok();
}

Status StagedFile::SetCommittedMtime(const timespec& mtime) const {
  if (!existing_) return Status::Error(ENOENT, "no committed file under " + path_);
  std::lock_guard l(mu_);
  auto fd = CommittedFdLocked();
  if (!fd.ok()) return fd.status();
  const timespec times[2] = {{0, UTIME_OMIT}, mtime};
  if (::futimens(*fd, times) != 0)
    return Status::FromErrno("modification time of the committed file of " + path_);
  return Status::Ok();
}

uint64_t StagedFile::size() const {
  std::lock_guard lock(mu_);
  return size_;
}

std::vector<Extent> StagedFile::written() const {
  std::lock_guard lock(mu_);
  return written_.extents();
}

void StagedFile::Unlogged(const Status& why) {
  std::lock_guard lock(mu_);
  if (unlogged_.ok())
    unlogged_ = Status::Error(EIO, path_ + " holds a change the log refused (" + why.ToString() +
                                       "): the transaction cannot commit it, only roll back");
}

void StagedFile::ForgetLocked(uint64_t committed_size) {
  mu_.AssertHeld();
  assert(existing_ && "a new file's staged file is the file itself");
  if (spilled_) {
    CloseLocked();
    if (auto dir = staging_->DirFd(); dir.ok()) ::unlinkat(*dir, name_.c_str(), 0);
    spilled_ = false;
  }
  staging_->memory_used_.fetch_sub(memory_.size());
  memory_.clear();
  memory_.shrink_to_fit();
  written_ = ExtentMap();
  allocated_ = ExtentMap();
  allocate_ahead_ = 0;
  next_offset_ = 0;
  failed_ = Status::Ok();
  unlogged_ = Status::Ok();
  size_ = committed_size;
  committed_limit_ = committed_size;
}

Status StagedFile::Sync() const {
  std::lock_guard lock(mu_);
  KTMFS_RETURN_IF_ERROR(unlogged_);
  // Held in memory only while every write to it travels in its own log record.
  if (!spilled_) return Status::Ok();
  KTMFS_RETURN_IF_ERROR(DrainLocked());
  // A descriptor opened now still reports a write-back error no one has seen yet (errseq).
  auto fd = FdLocked();
  if (!fd.ok()) return fd.status();
  // A new file's staged file becomes the file, times included (its modification time is the
  // one the transaction showed), so its metadata must last too; fdatasync may leave it behind.
  if (!existing_ ? ::fsync(*fd) != 0 : ::fdatasync(*fd) != 0)
    return Status::FromErrno("sync " + path_);
  return Status::Ok();
}

TxStaging::TxStaging(std::string root, std::string dir, int dir_fd)
    : root_(std::move(root)), dir_(std::move(dir)), dir_fd_(dir_fd) {}

TxStaging::~TxStaging() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

Result<std::unique_ptr<TxStaging>> TxStaging::Create(const std::string& root, const Guid& tx) {
  std::string dir = root + "/" + tx.ToString();
  return std::unique_ptr<TxStaging>(new TxStaging(root, dir, -1));
}

Result<std::unique_ptr<TxStaging>> TxStaging::Open(const std::string& root, const Guid& tx) {
  std::string dir = root + "/" + tx.ToString();
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return Status::FromErrno("open staging of transaction " + tx.ToString() + " at " + dir);
  return std::unique_ptr<TxStaging>(new TxStaging(root, dir, fd));
}

Result<int> TxStaging::DirFd() {
  std::lock_guard lock(dir_mu_);
  if (dir_fd_ >= 0) return dir_fd_;
  KTMFS_RETURN_IF_ERROR(MakeDirs(root_));
  if (::mkdir(dir_.c_str(), 0700) != 0) return Status::FromErrno("create staging " + dir_);
  // Not synced here: only prepare needs the directory durable, and Sync makes it so (many
  // transactions never need it: their redo reads nothing from staging).
  int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open staging " + dir_);
  // A default ACL above the state directory would reach every staged object and, through
  // apply's rename, the tree; a new object's ACLs are only those its transaction logged. (No
  // ACLs on the backing filesystem, or none to remove: nothing to do.)
  if (::fremovexattr(fd, "system.posix_acl_default") != 0 && errno != ENODATA &&
      errno != EOPNOTSUPP) {
    const int e = errno;
    ::close(fd);
    return Status::Error(e,
                         "removing the default ACL of staging " + dir_ + ": " + std::strerror(e));
  }
  dir_fd_ = fd;
  return fd;
}

Status TxStaging::MakeDir() {
  auto dir = DirFd();
  return dir.ok() ? Status::Ok() : dir.status();
}

Result<StoredValue> TxStaging::StoreValue(std::string_view value) {
  auto dir = DirFd();
  if (!dir.ok()) return dir.status();
  return values_.Store(*dir, dir_, value);
}

void TxStaging::DropValue(const StoredValue& at) {
  auto dir = DirFd();
  if (dir.ok()) values_.Drop(*dir, at);
}

void TxStaging::Opened(const StagedFile* f, Held which) {
  std::lock_guard lock(open_mu_);
  auto& open = open_[which];
  const size_t most = which == kStaged ? kOpenFiles : CommittedBudget();
  open.push_front(f);
  f->open_at_[which] = open.begin();
  for (auto it = std::prev(open.end()); open.size() > most && it != open.begin();) {
    const StagedFile* victim = *it;
    auto prev = std::prev(it);
    std::unique_lock victim_lock(victim->mu_, std::try_to_lock);
    if (victim_lock.owns_lock()) {
      // Out of the list here: the victim's own Closed would take open_mu_ again.
      open.erase(it);
      if (which == kStaged) {
        victim->CloseFdsLocked();
      } else {
        victim->CloseCommittedUnlistedLocked();
      }
    }
    it = prev;
  }
}

size_t TxStaging::CommittedBudget() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return kCommittedOpen;
  return std::clamp<size_t>(static_cast<size_t>(rl.rlim_cur / 8), 16, kCommittedOpen);
}

bool TxStaging::ShedCommitted() {
  std::lock_guard lock(open_mu_);
  auto& open = open_[kCommitted];
  bool shed = false;
  size_t keep = open.size() / 2;
  for (auto it = open.begin(); it != open.end();) {
    if (keep > 0) {
      --keep;
      ++it;
      continue;
    }
    const StagedFile* victim = *it;
    std::unique_lock victim_lock(victim->mu_, std::try_to_lock);
    if (!victim_lock.owns_lock()) {
      ++it;
      continue;
    }
    it = open.erase(it);
    victim->CloseCommittedUnlistedLocked();
    shed = true;
  }
  return shed;
}

void TxStaging::Used(const StagedFile* f, Held which) {
  f->mu_.AssertHeld();
  std::lock_guard lock(open_mu_);
  open_[which].splice(open_[which].begin(), open_[which], f->open_at_[which]);
}

void TxStaging::Closed(const StagedFile* f, Held which) {
  f->mu_.AssertHeld();
  std::lock_guard lock(open_mu_);
  open_[which].erase(f->open_at_[which]);
}

bool TxStaging::TakeMemory(uint64_t bytes) {
  uint64_t used = memory_used_.load();
  do {
    if (used + bytes > kMemoryBudget) return false;
  } while (!memory_used_.compare_exchange_weak(used, used + bytes));
  return true;
}

Result<StagedFile*> TxStaging::Make(const std::string& name, const CommittedFile* committed,
                                    const std::function<Status()>& charge) {
  if (!ValidName(name)) return Status::InvalidArgument("bad staged file name '" + name + "'");
  std::lock_guard lock(mu_);
  if (auto it = files_.find(name); it != files_.end()) {
    StagedFile* f = it->second.get();
    if (!f->dropped_ || committed == nullptr) return f;
    // A dropped file is taken up again over the committed file as it is now (others may have
    // changed it meanwhile), if the same object is still the one staged under that name.
    if (f->StagesObject(committed->handle)) {
      struct stat st;
      if (::fstat(committed->fd, &st) != 0)
        return Status::FromErrno("stat committed file for " + f->path_);
      std::lock_guard file_lock(f->mu_);
      f->ForgetLocked(static_cast<uint64_t>(st.st_size));
      f->dropped_ = false;
      return f;
    }
    // Removed outside the mount, and its number names another object now: a reader may still
    // hold the old one.
    replaced_.push_back(std::move(it->second));
    files_.erase(it);
  }
  std::string path = dir_ + "/" + name;
  if (committed != nullptr && !committed->shown.empty())
    path += ", the staged copy of " + committed->shown;
  uint64_t committed_size = 0;
  int dup_fd = -1;
  // A handle is of use only with a descriptor to open it by.
  const bool reopenable = committed != nullptr && committed->handle && committed->mount_fd >= 0;
  if (committed != nullptr) {
    struct stat st;
    if (::fstat(committed->fd, &st) != 0)
      return Status::FromErrno("stat committed file for " + path);
    committed_size = static_cast<uint64_t>(st.st_size);
    dup_fd = ::fcntl(committed->fd, F_DUPFD_CLOEXEC, 0);
    // Other transactions may hold the rest: this one gives up what it can open again.
    if (dup_fd < 0 && (errno == EMFILE || errno == ENFILE) && ShedCommitted())
      dup_fd = ::fcntl(committed->fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) return Status::FromErrno("dup committed file for " + path);
    if (charge && (!reopenable || reopenable_ < kCommittedOpen)) {
      if (Status s = charge(); !s.ok()) {
        ::close(dup_fd);
        return s;
      }
    }
  }
  auto f = std::unique_ptr<StagedFile>(
      new StagedFile(this, name, path, dup_fd, reopenable ? committed->handle : std::nullopt,
                     reopenable ? committed->mount_fd : -1, committed_size));
  std::lock_guard file_lock(f->mu_);
  if (reopenable) {
    reopenable_++;
    Opened(f.get(), kCommitted);
  }
  // A new file is the file apply renames into place: it exists from the start. Its data is
  // written through other descriptors (the transaction's handles, or the kernel's own with
  // passthrough), so this one is not kept: open for writing, it would look like a writer to
  // the lease probe that ends a passed-through writer's hold (fstx::StillOpenForWriting).
  if (committed == nullptr) {
    KTMFS_RETURN_IF_ERROR(f->SpillLocked());
    f->CloseLocked();
  }
  return files_.emplace(name, std::move(f)).first->second.get();
}

Result<StagedFile*> TxStaging::NewFile(const std::string& name) {
  return Make(name, nullptr, {});
}

Result<StagedFile*> TxStaging::FileFor(const std::string& name, const CommittedFile& committed,
                                       const std::function<Status()>& charge) {
  if (committed.fd < 0) return Status::InvalidArgument("no committed file for " + name);
  return Make(name, &committed, charge);
}

StagedFile* TxStaging::Find(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = files_.find(name);
  return it == files_.end() || it->second->dropped_ ? nullptr : it->second.get();
}

void TxStaging::Drop(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = files_.find(name);
  if (it == files_.end() || it->second->dropped_) return;
  StagedFile* f = it->second.get();
  struct stat st;
  std::lock_guard file_lock(f->mu_);
  auto committed = f->CommittedFdLocked();
  // Unknown, it reads as empty to a reader that still holds the file.
  const uint64_t size =
      committed.ok() && ::fstat(*committed, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  f->ForgetLocked(size);
  f->dropped_ = true;
}

Status TxStaging::NewDirectory(const std::string& name, mode_t mode) {
  if (!ValidName(name)) return Status::InvalidArgument("bad staged name '" + name + "'");
  auto dir = DirFd();
  if (!dir.ok()) return dir.status();
  if (::mkdirat(*dir, name.c_str(), mode & 07777) != 0)
    return Status::FromErrno("create staged directory " + dir_ + "/" + name);
  // mkdir applies the umask; the transaction asked for exactly this mode.
  if (::fchmodat(*dir, name.c_str(), mode & 07777, 0) != 0)
    return Status::FromErrno("chmod staged directory " + dir_ + "/" + name);
  return Status::Ok();
}

Status TxStaging::NewSymlink(const std::string& name, const std::string& target) {
  if (!ValidName(name)) return Status::InvalidArgument("bad staged name '" + name + "'");
  auto dir = DirFd();
  if (!dir.ok()) return dir.status();
  if (::symlinkat(target.c_str(), *dir, name.c_str()) != 0)
    return Status::FromErrno("create staged symlink " + dir_ + "/" + name);
  return Status::Ok();
}

Status TxStaging::NewNode(const std::string& name, mode_t mode, dev_t rdev) {
  if (!ValidName(name)) return Status::InvalidArgument("bad staged name '" + name + "'");
  auto dir = DirFd();
  if (!dir.ok()) return dir.status();
  if (::mknodat(*dir, name.c_str(), mode, rdev) != 0)
    return Status::FromErrno("create staged node " + dir_ + "/" + name);
  if (::fchmodat(*dir, name.c_str(), mode & 07777, 0) != 0)
    return Status::FromErrno("chmod staged node " + dir_ + "/" + name);
  return Status::Ok();
}

Status TxStaging::Sync() {
  std::lock_guard lock(mu_);
  for (const auto& [name, f] : files_)
    KTMFS_RETURN_IF_ERROR(f->Sync());
  std::lock_guard dir_lock(dir_mu_);
  if (dir_fd_ < 0) return Status::Ok();  // nothing was ever needed on disk
  if (::fsync(dir_fd_) != 0) return Status::FromErrno("fsync " + dir_);
  return FsyncPath(root_);
}

Status TxStaging::Discard() {
  std::lock_guard lock(mu_);
  files_.clear();
  replaced_.clear();
  std::lock_guard dir_lock(dir_mu_);
  if (dir_fd_ >= 0) ::close(dir_fd_);
  dir_fd_ = -1;
  return RemoveTree(dir_);
}

std::vector<std::string> TxStaging::file_names() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, f] : files_)
    if (f->on_disk()) out.push_back(name);
  return out;
}

}  // namespace ktmfs::fstx

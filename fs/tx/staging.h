// A transaction's staging: a directory of its own under the RM's staging root (on the same
// filesystem as the backing directory, so apply can rename staged files into place), holding
// one sparse file per changed or new regular file. Nothing here is visible to anyone until
// apply; discarding the directory is the whole of a rollback's data work.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fs/tx/async_direct_writer.h"
#include "fs/tx/extent_map.h"
#include "fs/tx/object_handle.h"
#include "fs/tx/value_file.h"
#include "log/owned_mutex.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fstx {

class TxStaging;

// The committed file an existing file's staged contents read through to.
struct CommittedFile {
  // Without a handle: kept open until the transaction ends.
  CommittedFile(int fd, std::optional<ObjectHandle> handle = std::nullopt, int mount_fd = -1)
      : fd(fd), handle(std::move(handle)), mount_fd(mount_fd) {}
  int fd;  // duplicated: the caller may close its own
  // The object's handle, and a descriptor on its filesystem that outlives the staging: with
  // them the staging may close its descriptor while unused and open the same object again
  // (TxStaging::kCommittedOpen); without, it keeps it open until the transaction ends. Once
  // closed, nothing keeps the object's number from reuse: the handle tells the object apart
  // (StagesObject; prepare checks the handles of what the transaction changed).
  std::optional<ObjectHandle> handle;
  int mount_fd;
  // Where the object was in the backing directory when staged, for messages: the staged
  // file's own name says only its number.
  std::string shown;
};

// One file's transactional contents: the bytes the transaction wrote (in the staged file, at
// the same offsets) over the committed file's bytes. An existing file's logged writes
// (WriteLogged) are held in memory while they stay within its first kMemoryExtent bytes and
// the transaction's kMemoryBudget: small transactions then create no file at all. The file is
// made on disk ("spilled") on the first write beyond that or the first plain Write.
class StagedFile {
 public:
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  Status Write(uint64_t offset, std::span<const std::byte> data);
  // The same for a write whose op record carries its data (OpKind::kWriteData): nothing reads
  // it from the staged file but the transaction itself, so it may be held in memory.
  Status WriteLogged(uint64_t offset, std::span<const std::byte> data);
  // Fills `out` from `offset`; returns the bytes read (short only at the end of the file).
  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) const;
  Status Truncate(uint64_t size);
  // The attributes of the committed file this one's writes go over (an existing file's).
  Status StatCommitted(struct stat* st) const;
  // Whether the committed file has every block of [offset, offset+length) (HasBlocks): a write
  // there replaces bytes that take space already, as an overwrite in place does natively.
  bool CommittedHasBlocks(uint64_t offset, uint64_t length) const;
  // Sets the committed file's modification time (its access time stays).
  Status SetCommittedMtime(const timespec& mtime) const;
  // Whether `handle` is the committed file's (true where either is unknown: a file without a
  // handle keeps its committed descriptor, so its object's number cannot name another).
  bool StagesObject(const std::optional<ObjectHandle>& handle) const;
  uint64_t size() const;
  std::vector<Extent> written() const;
  const std::string& name() const { return name_; }
  // Whether the staged file exists on disk (see the class comment).
  bool on_disk() const;
  Status Sync() const;
  // Waits for the queued writes, and returns the first error any write met (what a
  // transaction's fsync(2) of the file reports; durability comes with the commit).
  Status Settle() const;
  // A change made to the staged file whose record the log then refused (`why`): the file no
  // longer holds what the records say, and apply may copy it or put it in place whole. Sync
  // refuses from then on, so the transaction can only roll back. (Unless the change was the
  // transaction's first to the file: its staged contents are then dropped, TxStaging::Drop.)
  void Unlogged(const Status& why);

  static constexpr uint64_t kMemoryExtent = 256 << 10;
  // Aligned writes of at least this size are queued (async_direct_writer.h).
  static constexpr uint64_t kQueueMin = 64 << 10;
  // Space is allocated at most this far ahead of a queued write (never past the end).
  static constexpr uint64_t kAllocateAhead = 32 << 20;

 private:
  friend class TxStaging;
  StagedFile(TxStaging* staging, std::string name, std::string path, int committed_fd,
             std::optional<ObjectHandle> committed_handle, int committed_mount_fd,
             uint64_t committed_size);
  // Makes the file exist on disk with everything written so far.
  Status SpillLocked();
  // `may_queue`: whether a big aligned write may be queued (QueueLocked).
  Status WriteFd(uint64_t offset, std::span<const std::byte> data, bool may_queue);
  // Queues a big aligned write without waiting for the device (async_direct_writer.h); false:
  // the caller writes it now.
  Result<bool> QueueLocked(int fd, uint64_t offset, std::span<const std::byte> data);
  // Waits for the queued writes; the first failure of any, which every later call returns.
  Status DrainLocked() const;
  // The staged file's descriptor, opened again by name if it was closed to keep the
  // transaction's open descriptors few (TxStaging::kOpenFiles). Only for a spilled file.
  Result<int> FdLocked() const;
  // Closes the descriptors (the file stays on disk); the caller holds mu_.
  void CloseFdsLocked() const;
  // The same, and out of the staging's list of open files.
  void CloseLocked() const;
  // The committed file's descriptor, opened again by handle if it was closed (see
  // CommittedFile). Only for an existing file.
  Result<int> CommittedFdLocked() const;
  // Forgets every change staged (see TxStaging::Drop): reads go to the committed file, as
  // `committed_size` long; a spilled file leaves the disk.
  void ForgetLocked(uint64_t committed_size);
  // Closes the committed file's descriptor, which its handle opens again.
  void CloseCommittedLocked() const;
  // The same, for a file already taken out of the staging's list (under its open_mu_).
  void CloseCommittedUnlistedLocked() const;

  TxStaging* const staging_;
  const std::string name_;         // within the transaction's directory
  const std::string path_;         // for messages (and, when known, whose copy it is)
  bool spilled_ = false;           // the file exists on disk with every write in it
  mutable int fd_ = -1;            // open while in TxStaging's list of open files
  std::vector<std::byte> memory_;  // until spilled: the written bytes at their offsets
  mutable OwnedMutex mu_;
  // An existing file's committed file: our own descriptor of it (-1 while closed, which only
  // one with a handle is), and the handle it is opened again by. A new file has neither.
  const bool existing_;
  mutable int committed_fd_;
  const std::optional<ObjectHandle> committed_handle_;
  const int committed_mount_fd_;
  // The same file with O_DIRECT, for big writes (see direct_io.h): opened by the first one,
  // -1 where the filesystem refuses it.
  static constexpr int kNotOpened = -2;
  mutable int direct_fd_ = kNotOpened;
  // Big writes in flight to direct_fd_, made by the first; closed with the descriptors.
  mutable std::unique_ptr<AsyncDirectWriter> queue_;
  bool queue_refused_ = false;  // io_uring or fallocate is not to be had here
  // Space allocated for queued writes, and ahead of them below the end: fallocate waits for the
  // direct writes in flight, so it is done for many writes at once.
  ExtentMap allocated_;
  uint64_t allocate_ahead_ = 0;
  uint64_t next_offset_ = 0;  // where the last queued write ended
  // A queued write that failed: the file no longer holds what written_ says.
  mutable Status failed_ = Status::Ok();
  Status unlogged_ = Status::Ok();  // see Unlogged
  bool dropped_ = false;            // see TxStaging::Drop (under the staging's mu_)
  // Where this file is in TxStaging's lists of open descriptors while fd_ (kStaged) and
  // committed_fd_ (kCommitted, with a handle only) are open (guarded by open_mu_).
  mutable std::list<const StagedFile*>::iterator open_at_[2]{};
  ExtentMap written_;
  uint64_t size_;
  // Bytes at or past this offset no longer come from the committed file: it was truncated
  // below them inside the transaction, so they read as zeros unless written again.
  uint64_t committed_limit_;
};

class TxStaging {
 public:
  // Bytes of staged files a transaction holds in memory at most (see StagedFile).
  static constexpr uint64_t kMemoryBudget = 16 << 20;
  // Staged files a transaction keeps open at most: the least recently used is closed when
  // another must open, so a transaction that creates many files holds few descriptors.
  static constexpr size_t kOpenFiles = 32;
  // Committed files' descriptors a transaction keeps open at most, of those it can open again
  // by handle (CommittedFile): a transaction may change more existing files than the daemon may
  // have open (a root daemon's limit stays the hard RLIMIT_NOFILE where it lacks
  // CAP_SYS_RESOURCE). The rest are opened again on their next read through.
  static constexpr size_t kCommittedOpen = 512;
  // The same, with the daemon's file limit as it is now: at most an eighth of it, so that a few
  // big transactions together leave room for everything else the daemon opens (a request's
  // file, /proc for the tasks it serves). Read each time, as the limit may change (prlimit).
  static size_t CommittedBudget();

  // Stages into <root>/<tx>/, made (the root too if missing) when the first thing needs to be
  // on disk. Transaction ids are never reused, so the directory name is never reused either:
  // apply and recovery can trust what they find in it.
  static Result<std::unique_ptr<TxStaging>> Create(const std::string& root, const Guid& tx);
  // Opens an existing one (recovery); NotFound if it is gone.
  static Result<std::unique_ptr<TxStaging>> Open(const std::string& root, const Guid& tx);
  ~TxStaging();

  // The staged contents of a new file, empty, staged whole.
  Result<StagedFile*> NewFile(const std::string& name);
  // The staged contents of an existing file, reading through to `committed`. Returns the same
  // StagedFile for the same name. `charge`, before one is made that keeps one more descriptor
  // in all (the kCommittedOpen most recent of those with handles, every one of the others),
  // may refuse it.
  Result<StagedFile*> FileFor(const std::string& name, const CommittedFile& committed,
                              const std::function<Status()>& charge = {});
  // Null for a dropped file (Drop).
  StagedFile* Find(const std::string& name);
  // Forgets an existing file's staged contents: they hold only a change whose record the log
  // never got, and the transaction had no other change to the file (it did not hold its lock),
  // so its view reads the committed file again and nothing of the change stays for apply. The
  // StagedFile itself stays, reading as the committed file: a reader of the transaction may
  // hold it still (its memory is given back, a spilled file removed); FileFor takes it up again
  // over the committed file as it is then.
  void Drop(const std::string& name);
  // New objects other than regular files are created here too, at the time of the operation,
  // so apply only ever renames them into place and can tell by the staged name's absence that
  // it already did.
  Status NewDirectory(const std::string& name, mode_t mode);
  Status NewSymlink(const std::string& name, const std::string& target);
  Status NewNode(const std::string& name, mode_t mode, dev_t rdev);

  // An xattr value the transaction sets, kept on disk rather than in memory (value_file.h).
  Result<StoredValue> StoreValue(std::string_view value);
  // A stored value no op refers to (ValueFile::Drop).
  void DropValue(const StoredValue& at);
  Result<std::string> LoadValue(const StoredValue& at) const { return ReadStoredValue(dir_, at); }

  // Makes every staged file's data and the directory entries durable: what prepare needs
  // before its PREPARED record.
  Status Sync();
  // Removes the transaction's directory and everything in it (rollback, or after apply).
  Status Discard();

  const std::string& dir() const { return dir_; }
  // The staged files on disk.
  std::vector<std::string> file_names() const;
  // Makes the directory now if it is not there yet. Called before staging anything under a
  // writer's identity (writer_identity.h): the directory is the daemon's, and a user out of
  // space must still be able to stage what needs no block of its own (a link, a node).
  Status MakeDir();

 private:
  friend class StagedFile;
  TxStaging(std::string root, std::string dir, int dir_fd);
  Result<StagedFile*> Make(const std::string& name, const CommittedFile* committed,
                           const std::function<Status()>& charge);
  // The directory's descriptor, made first if need be.
  Result<int> DirFd();
  // Takes `bytes` more of the memory budget if it allows.
  bool TakeMemory(uint64_t bytes);
  // Descriptors of staged files, and of the committed files they read through to.
  enum Held { kStaged = 0, kCommitted = 1 };
  // `f` (whose mu_ the caller holds) has just opened its `which` descriptor: it becomes the most
  // recently used, and files past kOpenFiles (kCommittedOpen) close theirs. A file busy with its
  // own I/O is passed over (try_lock), so no lock is waited for in the wrong order.
  void Opened(const StagedFile* f, Held which);
  // `f` (mu_ held) is being used: the most recently used.
  void Used(const StagedFile* f, Held which);
  // `f` (mu_ held) closed its descriptor or is going away.
  void Closed(const StagedFile* f, Held which);
  // The daemon is out of descriptors (EMFILE): closes the older half of the committed files'
  // that can be opened again, passing over files busy with their own I/O. Whether any was.
  bool ShedCommitted();

  const std::string root_;
  const std::string dir_;
  std::mutex dir_mu_;
  int dir_fd_;  // -1 until the directory is made
  // Before files_: a StagedFile leaves this list as it is destroyed.
  std::mutex open_mu_;
  // Files with an open descriptor of each kind, most recent first.
  std::list<const StagedFile*> open_[2];
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<StagedFile>> files_;
  // Dropped files whose name a new file of another object took (see Make).
  std::vector<std::unique_ptr<StagedFile>> replaced_;
  size_t reopenable_ = 0;  // existing files with handles made (under mu_)
  std::atomic<uint64_t> memory_used_{0};
  ValueFile values_;
};

// Removes a directory tree (no symlinks followed); fsyncs its parent. Used by Discard and by
// recovery for staging it finds without a transaction.
Status RemoveTree(const std::string& path);
// The same without the fsync: for a finished transaction's staging, whose removal needs no
// durability (recovery removes staging that belongs to no transaction).
Status RemoveTreeLazily(const std::string& path);
// The same for a rolled-back transaction's staging, whose files nobody will read again: each
// file with no other name is emptied before it is removed. A file the transaction created is
// its staged file, which the kernel's node of it keeps open in the daemon until the kernel
// forgets the node; removing the name alone would keep its space taken until then.
Status DiscardTree(const std::string& path);
// mkdir -p (mode 0700 for what it creates).
Status MakeDirs(const std::string& path);
// The directory part of `path`: "." for a bare name, "/" for a name at the root.
std::string Parent(const std::string& path);

}  // namespace ktmfs::fstx

// The filesystem RM's lock table: the first transaction to change an object, or a directory
// entry, holds it until it commits or rolls back; any other change to it fails at once with
// EBUSY (no waiting, so no deadlocks), as TxF did. Readers never take locks.
//
// Keys taken with their place in the backing tree also protect the tree around them, because
// apply finds what a transaction changed by path (the rule in fs/TRANSACTIONS.md, "Conflicts"):
// - a name a transaction holds covers everything below it: nobody else may change anything
//   there (the transaction removes, renames or replaces what the name leads to);
// - changing a name is refused while anybody else holds something below it (the change would
//   move or remove it).
// Both directions are checked inside Acquire, under one mutex, so of two transactions racing
// for a directory and something below it exactly one wins.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fstx {

// An existing backing object, named by identity so renames do not change what is held.
struct ObjectKey {
  uint64_t dev = 0;
  uint64_t ino = 0;
  auto operator<=>(const ObjectKey&) const = default;
};

// A name in a directory: held so two transactions cannot both create or remove it.
struct EntryKey {
  uint64_t dir_dev = 0;
  uint64_t dir_ino = 0;
  std::string name;
  auto operator<=>(const EntryKey&) const = default;
};

using LockKey = std::variant<ObjectKey, EntryKey>;

// "object 8:1234" or "entry 8:12/name", for messages.
std::string Describe(const LockKey& key);

// Whether anyone has the file open for writing (`fd`: read-only, on it), as the kernel's lease
// rules tell: a read lease is granted only on a file nobody has open for writing. The lease is
// held for an instant; a process that calls this must ignore SIGIO, which a lease break in
// that instant sends it (the daemon does).
bool StillOpenForWriting(int fd);

class LockTable {
 public:
  // OK if the key was free (it is now held by tx) or already held by tx; EBUSY naming the
  // holder otherwise. `path`: where the key is in the backing tree (relative to its root).
  // With a path, also EBUSY when another transaction holds a name at or above it, or, for an
  // entry, anything below it. A key tx holds already, given a path it was not taken at (an
  // object with several names), is then held at that path as well.
  Status Acquire(const Guid& tx, const LockKey& key, const std::string& path = {});
  // Whether a transaction other than `except` holds a key at or below `dir` (a backing path;
  // keys acquired without a path do not count). Moving `dir` would move what they hold.
  bool HeldUnder(const std::string& dir, const Guid& except) const;
  // Whether a transaction other than `except` holds a name at `path` or at one of its
  // ancestors: a change at `path` would land in what that transaction removes or moves.
  bool NameHeldAbove(const std::string& path, const Guid& except) const;
  std::optional<Guid> Holder(const LockKey& key) const;
  // Whether tx holds `key` already, which is then taken again as Acquire would without a path:
  // the one change to give it back no longer does (see Journal).
  bool TakeAgain(const Guid& tx, const LockKey& key);

  // Outside writers: files open for writing outside transactions whose writes the kernel makes
  // on the backing file itself (FUSE passthrough, fs/ops/passthrough.h). Such a write cannot be
  // refused when it comes, so the conflict is taken at the open instead: EBUSY naming the
  // holder while a transaction holds the object, and while a writer is open, Acquire of the
  // object by any transaction is EBUSY. Counted: writers do not conflict with each other.
  //
  // The kernel sends a file's release after close(2) has returned, and the daemon may take a
  // request that came after it first. So a writer still open waits for its release for up to
  // kReleaseGrace before its hold refuses anything: `echo x > f; txbegin .; echo y > f` must
  // not fail for a descriptor already closed.
  static constexpr std::chrono::milliseconds kReleaseGrace{2000};
  Status AddOutsideWriter(const ObjectKey& key);
  // The last writer's release may leave the backing file still writable outside the daemon: a
  // shared mapping made through it keeps writing after close(2), and the kernel may finish
  // closing the passed-through file only after the daemon hears of the release. With
  // `still_open` the hold then lingers, and every later question about the object (Acquire,
  // HasOutsideWriter) asks the probe again until it says the file is no longer open for writing.
  void RemoveOutsideWriter(const ObjectKey& key, bool still_open = false);
  // Whether a writer holds the object (an open one, or a lingering one still writing). With
  // `grace`, an open one first gets kReleaseGrace to be released; the caller then must hold
  // nothing the release needs.
  bool HasOutsideWriter(const ObjectKey& key, bool grace = false);
  // Tells whether an object's backing file is open for writing anywhere (fs/ops/passthrough.h
  // installs it: the table holds no descriptor, which would keep a removed file's space). Called
  // under the table's mutex. Without one a lingering hold ends at once.
  using WriterProbe = std::function<bool(const ObjectKey&)>;
  void SetWriterProbe(WriterProbe probe);
  // Drops every lock tx holds; returns how many.
  size_t ReleaseAll(const Guid& tx);

  // While alive, records what Acquire newly takes for `tx` on this thread; Undo gives that
  // back. A change takes its locks one after another before it logs anything: one refused
  // halfway (a rename whose target another transaction holds) must not leave its transaction
  // holding the others, for a change that fails holds nothing (ktmfs-tx(7)).
  //
  // Another change of the same transaction may take a recorded key too (another thread, a
  // write-back racing a refused write) and log before this one fails: the key is then that
  // change's as well, and out of this record, so Undo leaves it held.
  class Journal {
   public:
    Journal(LockTable& table, const Guid& tx);
    ~Journal();  // stops recording; keeps what was taken
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;
    // `releasing`, if given, runs for each key given back, under the table's lock, before it
    // is free: nobody can take it meanwhile (it must not call into the table).
    void Undo(const std::function<void(const LockKey&)>& releasing = {});

   private:
    friend class LockTable;
    LockTable& table_;
    Guid tx_;
    Journal* outer_;
    std::vector<LockKey> keys_;                           // newly held
    std::vector<std::pair<LockKey, std::string>> paths_;  // paths newly held at
  };
  // What txstat shows as "objects locked" (objects and entries together).
  size_t CountHeldBy(const Guid& tx) const;
  // Every key tx holds.
  std::vector<LockKey> HeldBy(const Guid& tx) const;
  // Every transaction that holds a key.
  std::vector<Guid> Holders() const;
  size_t size() const;
  // Without taking the lock: every write outside a transaction asks, and usually none is held.
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }

 private:
  mutable std::mutex mu_;
  std::atomic<size_t> count_{0};  // holders_.size()
  std::map<LockKey, Guid> holders_;
  struct OutsideWriters {
    uint32_t open = 0;
    bool lingering = false;  // after the last release, while the file may still be written
  };
  WriterProbe writer_probe_;
  std::map<ObjectKey, OutsideWriters> outside_writers_;
  std::condition_variable writer_released_;  // a writer's count went down
  // Under mu_: whether the object's writers still hold it; drops a lingering hold that has
  // ended.
  bool OutsideWriterLocked(const ObjectKey& key);
  // Under mu_ (in `lock`): waits up to kReleaseGrace while an open writer holds the object.
  void AwaitReleaseLocked(std::unique_lock<std::mutex>& lock, const ObjectKey& key);
  std::map<LockKey, std::vector<std::string>> paths_;
  size_t path_count_ = 0;  // entries of paths_'s lists, for the consistency check
  // The keys taken with a path, by path: ancestors and subtrees are ranges of this map.
  std::multimap<std::string, LockKey> by_path_;

  // Under mu_: the holder other than tx of what makes a change at `path` conflict, if any.
  const Guid* NameAboveLocked(const std::string& path, const Guid& tx) const;
  const Guid* HeldUnderLocked(const std::string& dir, const Guid& tx) const;
  bool HasPathLocked(const LockKey& key, const std::string& path) const;
  // Debug builds: the indexes agree (mu_ held).
  void AssertConsistentLocked() const;
  // Per-transaction index so ReleaseAll need not scan the whole table.
  std::unordered_map<Guid, std::vector<LockKey>, GuidHash> held_;
  // The live journals (under mu_), and what a key tx holds already, taken again by anyone but
  // `own`, takes out of the others' records (see Journal).
  std::vector<Journal*> journals_;
  void ShareLocked(const Guid& tx, const LockKey& key, const Journal* own);
};

}  // namespace ktmfs::fstx

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
#include <cstddef>
#include <cstdint>
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

  // Outside writers: files open for writing outside transactions whose writes the kernel makes
  // on the backing file itself (FUSE passthrough, fs/passthrough.h). Such a write cannot be
  // refused when it comes, so the conflict is taken at the open instead: EBUSY naming the
  // holder while a transaction holds the object, and while a writer is open, Acquire of the
  // object by any transaction is EBUSY. Counted: writers do not conflict with each other.
  Status AddOutsideWriter(const ObjectKey& key);
  void RemoveOutsideWriter(const ObjectKey& key);
  // Drops every lock tx holds; returns how many.
  size_t ReleaseAll(const Guid& tx);
  // What txstat shows as "objects locked" (objects and entries together).
  size_t CountHeldBy(const Guid& tx) const;
  size_t size() const;
  // Without taking the lock: every write outside a transaction asks, and usually none is held.
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }

 private:
  mutable std::mutex mu_;
  std::atomic<size_t> count_{0};  // holders_.size()
  std::map<LockKey, Guid> holders_;
  std::map<ObjectKey, uint32_t> outside_writers_;
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
};

}  // namespace ktmfs::fstx

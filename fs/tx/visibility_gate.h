// Where readers of the committed view meet apply, object by object.
//
// Apply changes the backing directory in place (fs/TRANSACTIONS.md, "Apply and recovery"), so
// a reader must not read an object while a commit's apply is half done with it. Before, every
// reader outside transactions took one visibility lock shared and apply took it exclusive: a
// `stat` of a file no commit touches waited seconds for a big commit's copy. Here apply closes
// only the objects it changes (the objects its transaction holds, and the directories whose
// entries it changes) and waits for the readers already inside them; readers of anything else
// go on.
//
// A reader names each object before it reads it (Pass::Add). An object apply has closed is
// refused: the reader then lets go of everything it counted before it waits (Await), so a
// reader never holds up an apply while it waits for another one, and no wait can form a cycle.
// A reader that learns which object it read only after reading it (a lookup finds the child
// by its name) reads it again when an apply ran meanwhile (Pass::ApplyOverlapped).
//
// An object apply keeps closed while it still writes it in place, after letting readers into
// the rest (Closed::Keep), can come with what its readers are served meanwhile (ServedObject):
// the object as the commit leaves it, read from where the data already is. A reader that can
// use that asks for it (Pass::AddOrServe, EnterOrServe) and does not wait.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "log/status.h"

namespace ktmfs::fstx {

// What readers of an object are answered while apply writes its data in place: the attributes
// and bytes the commit gives it, which do not change while it is served.
class ServedObject {
 public:
  virtual ~ServedObject() = default;
  virtual const struct stat& Attributes() const = 0;
  // Fills `out` from `offset`; the bytes read (short only at the end).
  virtual Result<size_t> Read(uint64_t offset, std::span<std::byte> out) const = 0;
  // The value of the extended attribute `name`: nullopt where it is the object's own value (or
  // absence), which apply leaves as it is; ENODATA where the commit removes it.
  virtual std::optional<Result<std::string>> Xattr(const std::string& name) const = 0;
  // The names of its extended attributes, given the object's own.
  virtual std::vector<std::string> XattrNames(std::vector<std::string> own) const = 0;
  // Called once apply has written the object, before its readers read the object itself again:
  // gives it what its readers were shown where apply alone would give it something else (the
  // modification time, which apply's own writes stamp), so nothing changes when serving ends.
  virtual Status KeepWhatWasServed() const = 0;
};

class VisibilityGate {
 public:
  struct Key {
    uint64_t dev = 0;
    uint64_t ino = 0;
    auto operator<=>(const Key&) const = default;
  };

  // A reader's hold on the objects it reads. Movable; lets go when destroyed.
  class Pass {
   public:
    Pass() = default;
    Pass(Pass&& o) noexcept { *this = std::move(o); }
    Pass& operator=(Pass&& o) noexcept;
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    ~Pass() { Release(); }

    // Counts the reader on `key`; false if an apply has it closed. The caller must then let go
    // of the pass before it waits for that apply (VisibilityGate::Await).
    [[nodiscard]] bool Add(Key key);
    // The same, but an object apply keeps closed with a ServedObject counts too: the reader
    // then reads it from ServedFrom(key), which stays valid while the pass holds it.
    [[nodiscard]] bool AddOrServe(Key key);
    // What the reader is to read `key` from instead of the object itself: null unless
    // AddOrServe (or EnterOrServe) counted it as served.
    const ServedObject* ServedFrom(Key key) const;
    // Whether the pass counts the reader on `key`.
    bool Counts(Key key) const;
    // Whether an apply ran at some time since the pass was made (one already under way then
    // included): what the reader read before it counted the object may have been half applied.
    bool ApplyOverlapped() const;
    // Whether some apply opened objects since the pass was made: a closed object read before
    // may have been opened since, after a change the reader saw half of.
    bool OpenedSince() const;
    // Whether the pass was made by the gate (not default-constructed) and not released.
    bool active() const { return gate_ != nullptr; }
    void Release();

   private:
    friend class VisibilityGate;
    VisibilityGate* gate_ = nullptr;
    uint64_t applies_seen_ = 0;
    uint64_t opens_seen_ = 0;
    bool apply_was_running_ = false;
    std::vector<Key> keys_;
    std::vector<std::pair<Key, std::shared_ptr<const ServedObject>>> served_;

    bool AddLocked(Key key, bool serve);
  };

  // Apply's hold: the objects stay closed to readers until it is destroyed.
  class Closed {
   public:
    Closed() = default;
    Closed(Closed&& o) noexcept { *this = std::move(o); }
    Closed& operator=(Closed&& o) noexcept;
    Closed(const Closed&) = delete;
    Closed& operator=(const Closed&) = delete;
    ~Closed() { Open(); }
    void Open();
    // Moves those of `keys` this holds closed into a hold of their own, which opens them
    // separately: apply lets readers into the rest while it still writes these (a big file's
    // data, written in place). Readers who ask are served those in `served` meanwhile; when the
    // hold opens, it waits for them to finish first.
    using ServedObjects = std::map<Key, std::shared_ptr<const ServedObject>>;
    Closed Keep(const std::vector<Key>& keys, ServedObjects served = {});

   private:
    friend class VisibilityGate;
    VisibilityGate* gate_ = nullptr;
    std::vector<Key> keys_;
    bool serves_ = false;  // some of keys_ are in VisibilityGate::served_
  };

  VisibilityGate() = default;
  VisibilityGate(const VisibilityGate&) = delete;
  VisibilityGate& operator=(const VisibilityGate&) = delete;
  ~VisibilityGate();

  // An empty pass.
  Pass Enter();
  // A pass counting `key`, waiting first while an apply has it closed.
  Pass EnterFor(Key key);
  // The same, but served instead of waiting where Pass::AddOrServe would be.
  Pass EnterOrServe(Key key);
  // Waits until no apply has `key` closed (the caller holds no pass).
  void Await(Key key);
  // The same for a reader that can be served (Pass::AddOrServe): also returns once `key` is
  // served, so a reader that came before apply let readers in is served too.
  void AwaitOrServed(Key key);

  // Closes `keys` to new readers and waits until the readers counted on them have let go.
  // Applies that close the same object run one after the other: the second waits here. No keys:
  // nothing is closed, and no reader has to look again.
  Closed Close(std::vector<Key> keys);

  // Whether an apply has any object closed. Objects are closed only while apply holds the
  // daemon's visibility lock exclusive, so a reader inside a transaction, which holds it shared
  // for each request, that finds none closed need not pass here at all: none can close before
  // its request ends.
  bool AnyClosed() const { return closed_count_.load(std::memory_order_acquire) != 0; }

  // For tests: how many readers are counted on `key`.
  size_t ReadersOf(Key key) const;
  // Whether an apply has `key` closed: a committed open that would hand the kernel the backing
  // file itself (passthrough) waits for the apply then, as it could not be served.
  bool IsClosed(Key key) const;
  // Whether readers who ask are served `key` from a ServedObject now.
  bool IsServed(Key key) const;
  // How many readers wait in Await or AwaitOrServed.
  size_t Waiting() const;

 private:
  mutable std::mutex mu_;
  // A reader let go, an apply opened its objects, or a hold began serving them.
  std::condition_variable changed_;
  std::map<Key, uint32_t> readers_;      // readers counted per object (absent: none)
  std::set<Key> closed_;                 // objects an apply has closed
  Closed::ServedObjects served_;         // of those, the ones readers may be served
  uint64_t applies_begun_ = 0;           // counts Close calls that have closed their objects
  uint32_t applies_running_ = 0;         // of those, the ones not opened again yet
  uint64_t opens_ = 0;                   // counts holds that opened objects
  std::atomic<size_t> closed_count_{0};  // closed_.size(), for AnyClosed
  size_t waiting_ = 0;                   // readers in Await or AwaitOrServed

  void ReleaseLocked(std::vector<Key>& keys);
  Pass EnterWith(Key key, bool serve);
};

}  // namespace ktmfs::fstx

// What the kernel may have cached that a transaction makes wrong, kept for the invalidations the
// daemon sends (fs/fuse/invalidator.h):
// - touched: committed objects whose names or attributes a live transaction changed in its
//   view; they are served with zero timeouts to everyone while it lives, since callers in and
//   out of it see them differently;
// - ended: what a transaction changed, reported by its resource manager as it ends (before it
//   lets go of its locks) and handed on once the transaction no longer holds back its own
//   operations;
// - settling: the existing objects of ended transactions until they are handed on, so that a
//   file opened meanwhile does not keep pages from before.
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fs/tx/records.h"
#include "src/guid.h"

namespace ktmfs::fs {

// Cache invalidations to send to the kernel once a transaction ends (see Invalidator).
struct EndedTx {
  Guid id;
  bool committed = false;
  int source = 0;
  std::vector<fstx::ObjectId> objects;
  std::vector<std::pair<std::string, std::string>> entries;  // (backing dir, name)
};

class CacheCoherence {
 public:
  void MarkTouched(const Guid& tx, dev_t dev, ino_t ino);
  bool IsTouched(dev_t dev, ino_t ino) const;
  // What a resource manager reports of `e.id` as it ends; its existing objects are settling
  // from now on.
  void NoteEnded(EndedTx e);
  bool IsSettling(dev_t dev, ino_t ino) const;
  // `tx` has ended: it touches nothing any more, and what was noted of it is given to the
  // caller to hand on, then to Settled.
  std::vector<EndedTx> TakeEnded(const Guid& tx);
  void Settled(const std::vector<EndedTx>& ended);

 private:
  mutable std::mutex mu_;
  std::map<std::pair<dev_t, ino_t>, std::vector<Guid>> touched_;
  std::vector<EndedTx> ended_;
  std::map<std::pair<dev_t, ino_t>, int> settling_;
};

}  // namespace ktmfs::fs

#include "fs/service/cache_coherence.h"

#include <algorithm>
#include <cassert>

namespace ktmfs::fs {

void CacheCoherence::MarkTouched(const Guid& tx, dev_t dev, ino_t ino) {
  std::lock_guard l(mu_);
  auto& v = touched_[{dev, ino}];
  if (std::find(v.begin(), v.end(), tx) == v.end()) v.push_back(tx);
}

bool CacheCoherence::IsTouched(dev_t dev, ino_t ino) const {
  std::lock_guard l(mu_);
  return touched_.contains({dev, ino});
}

void CacheCoherence::NoteEnded(EndedTx e) {
  std::lock_guard l(mu_);
  for (const auto& o : e.objects)
    if (o.kind == fstx::ObjectId::Kind::kExisting) settling_[{o.dev, o.ino}]++;
  ended_.push_back(std::move(e));
}

bool CacheCoherence::IsSettling(dev_t dev, ino_t ino) const {
  std::lock_guard l(mu_);
  return settling_.contains({dev, ino});
}

std::vector<EndedTx> CacheCoherence::TakeEnded(const Guid& tx) {
  std::lock_guard l(mu_);
  for (auto it = touched_.begin(); it != touched_.end();) {
    std::erase(it->second, tx);
    it = it->second.empty() ? touched_.erase(it) : std::next(it);
  }
  std::vector<EndedTx> taken;
  for (auto it = ended_.begin(); it != ended_.end();) {
    if (it->id == tx) {
      taken.push_back(std::move(*it));
      it = ended_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

void CacheCoherence::Settled(const std::vector<EndedTx>& ended) {
  std::lock_guard l(mu_);
  for (const auto& e : ended) {
    for (const auto& o : e.objects) {
      if (o.kind != fstx::ObjectId::Kind::kExisting) continue;
      auto it = settling_.find({o.dev, o.ino});
      assert(it != settling_.end() && it->second > 0 && "settled once per time it was noted");
      if (it != settling_.end() && --it->second == 0) settling_.erase(it);
    }
  }
}

}  // namespace ktmfs::fs

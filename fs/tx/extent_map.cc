#include "fs/tx/extent_map.h"

#include <algorithm>

namespace ktmfs::fstx {

void ExtentMap::Add(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  uint64_t start = offset, end = offset + length;
  // Swallow every range that overlaps or touches [start, end).
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second >= start) --it;
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_[start] = end;
}

void ExtentMap::ClipTo(uint64_t size) {
  auto it = ranges_.lower_bound(size);
  ranges_.erase(it, ranges_.end());
  if (!ranges_.empty()) {
    auto last = std::prev(ranges_.end());
    if (last->second > size) last->second = size;
    if (last->first == last->second) ranges_.erase(last);
  }
}

std::vector<ExtentMap::Piece> ExtentMap::Split(uint64_t offset, uint64_t length) const {
  std::vector<Piece> out;
  uint64_t pos = offset, end = offset + length;
  auto it = ranges_.upper_bound(pos);
  if (it != ranges_.begin() && std::prev(it)->second > pos) --it;
  while (pos < end) {
    if (it == ranges_.end() || it->first >= end) {
      out.push_back({pos, end - pos, false});
      break;
    }
    if (it->first > pos) {
      out.push_back({pos, it->first - pos, false});
      pos = it->first;
    }
    uint64_t stop = std::min(end, it->second);
    out.push_back({pos, stop - pos, true});
    pos = stop;
    ++it;
  }
  return out;
}

std::vector<Extent> ExtentMap::extents() const {
  std::vector<Extent> out;
  for (const auto& [start, end] : ranges_)
    out.push_back({start, end - start});
  return out;
}

}  // namespace ktmfs::fstx

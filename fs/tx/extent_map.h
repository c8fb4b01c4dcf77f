// Which byte ranges of a file a transaction has written: reads of those come from its staged
// file, reads elsewhere from the committed file. Ranges are kept merged and sorted.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

namespace ktmfs::fstx {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const Extent&) const = default;
};

class ExtentMap {
 public:
  void Add(uint64_t offset, uint64_t length);
  // Forgets everything at or past `size` (a truncate).
  void ClipTo(uint64_t size);
  // The pieces of [offset, offset+length) in order, each marked written or not, covering it
  // exactly; what a read walks.
  struct Piece {
    uint64_t offset;
    uint64_t length;
    bool written;
    bool operator==(const Piece&) const = default;
  };
  std::vector<Piece> Split(uint64_t offset, uint64_t length) const;
  std::vector<Extent> extents() const;
  bool empty() const { return ranges_.empty(); }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end (exclusive), disjoint, not touching
};

}  // namespace ktmfs::fstx

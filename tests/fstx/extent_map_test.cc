#include "fs/tx/extent_map.h"

#include <gtest/gtest.h>

#include <random>

namespace ktmfs::fstx {
namespace {

TEST(ExtentMap, MergesOverlappingAndTouchingRanges) {
  ExtentMap m;
  m.Add(10, 5);  // [10,15)
  m.Add(20, 5);  // [20,25)
  EXPECT_EQ(m.extents(), (std::vector<Extent>{{10, 5}, {20, 5}}));
  m.Add(15, 5);  // touches both
  EXPECT_EQ(m.extents(), (std::vector<Extent>{{10, 15}}));
  m.Add(0, 3);
  m.Add(2, 9);
  EXPECT_EQ(m.extents(), (std::vector<Extent>{{0, 25}}));
  m.Add(100, 0);
  EXPECT_EQ(m.extents().size(), 1u);
}

TEST(ExtentMap, ClipDropsAndShortens) {
  ExtentMap m;
  m.Add(0, 10);
  m.Add(20, 10);
  m.ClipTo(25);
  EXPECT_EQ(m.extents(), (std::vector<Extent>{{0, 10}, {20, 5}}));
  m.ClipTo(20);
  EXPECT_EQ(m.extents(), (std::vector<Extent>{{0, 10}}));
  m.ClipTo(0);
  EXPECT_TRUE(m.empty());
}

TEST(ExtentMap, SplitCoversRangeExactly) {
  ExtentMap m;
  m.Add(10, 10);
  m.Add(30, 10);
  using P = ExtentMap::Piece;
  EXPECT_EQ(m.Split(0, 50),
            (std::vector<P>{
                {0, 10, false}, {10, 10, true}, {20, 10, false}, {30, 10, true}, {40, 10, false}}));
  EXPECT_EQ(m.Split(15, 20), (std::vector<P>{{15, 5, true}, {20, 10, false}, {30, 5, true}}));
  EXPECT_EQ(m.Split(12, 3), (std::vector<P>{{12, 3, true}}));
}

// Against a bitmap model: random adds and clips, then every split must agree byte by byte.
TEST(ExtentMap, MatchesBitmapModel) {
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    ExtentMap m;
    std::vector<bool> model(300, false);
    for (int i = 0; i < 30; ++i) {
      uint64_t off = rng() % 250, len = rng() % 40;
      if (rng() % 5 == 0) {
        m.ClipTo(off);
        for (size_t b = off; b < model.size(); ++b)
          model[b] = false;
      } else {
        m.Add(off, len);
        for (uint64_t b = off; b < off + len; ++b)
          model[b] = true;
      }
    }
    uint64_t pos = 0;
    for (const auto& p : m.Split(0, 300)) {
      ASSERT_EQ(p.offset, pos);
      for (uint64_t b = p.offset; b < p.offset + p.length; ++b)
        ASSERT_EQ(model[b], p.written) << "byte " << b;
      pos += p.length;
    }
    ASSERT_EQ(pos, 300u);
  }
}

}  // namespace
}  // namespace ktmfs::fstx

// The one little-endian codec (log/little_endian.h): least significant byte first on every host,
// and back again, at every width the formats use.
#include "log/little_endian.h"

#include <gtest/gtest.h>

#include <array>

namespace ktmfs::log {
namespace {

template <size_t N>
std::array<uint8_t, N> Bytes(const std::byte (&b)[N]) {
  std::array<uint8_t, N> out{};
  for (size_t i = 0; i < N; ++i)
    out[i] = std::to_integer<uint8_t>(b[i]);
  return out;
}

TEST(EndianTest, StoresLeastSignificantByteFirst) {
  std::byte b2[2], b4[4], b8[8];
  StoreLe<uint16_t>(b2, 0x0102);
  StoreLe<uint32_t>(b4, 0x01020304u);
  StoreLe<uint64_t>(b8, 0x0102030405060708ull);
  EXPECT_EQ(Bytes(b2), (std::array<uint8_t, 2>{0x02, 0x01}));
  EXPECT_EQ(Bytes(b4), (std::array<uint8_t, 4>{0x04, 0x03, 0x02, 0x01}));
  EXPECT_EQ(Bytes(b8), (std::array<uint8_t, 8>{0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01}));
}

TEST(EndianTest, LoadsWhatWasStoredAtEveryWidth) {
  std::byte b[8];
  for (uint64_t v : {0ull, 1ull, 0xffull, 0x8000000000000000ull, 0xfedcba9876543210ull}) {
    StoreLe<uint64_t>(b, v);
    EXPECT_EQ(LoadLe<uint64_t>(b), v);
    StoreLe<uint32_t>(b, static_cast<uint32_t>(v));
    EXPECT_EQ(LoadLe<uint32_t>(b), static_cast<uint32_t>(v));
    StoreLe<uint16_t>(b, static_cast<uint16_t>(v));
    EXPECT_EQ(LoadLe<uint16_t>(b), static_cast<uint16_t>(v));
  }
  // The bytes past the width are left alone and not read.
  StoreLe<uint64_t>(b, ~0ull);
  StoreLe<uint16_t>(b, 0);
  EXPECT_EQ(LoadLe<uint16_t>(b), 0);
  EXPECT_EQ(LoadLe<uint64_t>(b), 0xffffffffffff0000ull);
}

}  // namespace
}  // namespace ktmfs::log

// Transaction and resource-manager identities: 128-bit GUIDs, printed in the usual
// 8-4-4-4-12 lowercase form (what users see in txstat and pass back to the tools).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ktmfs {

struct Guid {
  std::array<uint8_t, 16> bytes{};

  static Guid Random();
  // Accepts exactly the printed form; anything else is nullopt.
  static std::optional<Guid> Parse(std::string_view text);
  std::string ToString() const;
  bool IsNil() const;

  auto operator<=>(const Guid&) const = default;
};

struct GuidHash {
  size_t operator()(const Guid& g) const;
};

}  // namespace ktmfs

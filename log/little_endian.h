// The one little-endian codec of the tree: every on-disk and on-wire integer ktmfs writes (log
// headers, the TM's records, the filesystem RM's records, POSIX ACL xattrs) is stored least
// significant byte first, whatever the host. Written with shifts, which compilers turn into
// plain loads and stores on little-endian hosts, so no format depends on the host's order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ktmfs::log {

template <typename T>
inline void StoreLe(std::byte* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<std::byte>(static_cast<uint64_t>(v) >> (8 * i));
}

template <typename T>
inline T LoadLe(const std::byte* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= uint64_t{std::to_integer<uint8_t>(p[i])} << (8 * i);
  return static_cast<T>(v);
}

}  // namespace ktmfs::log

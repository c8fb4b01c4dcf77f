// Helpers shared by the log tests.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "log/fault_storage.h"
#include "log/log.h"

namespace ktmfs::log::testing {

// Small blocks and containers so boundaries and the ring's wrap come quickly.
inline LogOptions SmallOptions(uint32_t initial = 2, uint32_t max = 4) {
  LogOptions o;
  o.block_size = 512;
  o.container_size = 8 << 10;
  o.initial_containers = initial;
  o.max_containers = max;
  return o;
}

// Deterministic payload bytes for (size, seed), so a record can be checked by its content.
inline std::vector<std::byte> Payload(size_t size, uint64_t seed) {
  std::vector<std::byte> out(size);
  std::mt19937_64 rng(seed * 7919 + size);
  for (auto& b : out)
    b = std::byte(rng() & 0xff);
  return out;
}

inline std::vector<Record> ReadEverything(Log* log, Lsn from = kInvalidLsn,
                                          Status* error = nullptr) {
  std::vector<Record> out;
  auto cursor = log->ReadAll(from);
  Record r;
  while (true) {
    auto more = cursor->Next(&r);
    if (!more.ok()) {
      if (error) *error = more.status();
      break;
    }
    if (!*more) break;
    out.push_back(std::move(r));
  }
  return out;
}

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::ktmfs::Status s_ = (expr);                            \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

template <typename T>
T ValueOrDie(Result<T> r, const char* what) {
  if (!r.ok()) {
    ADD_FAILURE() << what << ": " << r.status().ToString();
    std::abort();
  }
  return std::move(r).value();
}
#define VALUE(expr) ::ktmfs::log::testing::ValueOrDie((expr), #expr)

}  // namespace ktmfs::log::testing

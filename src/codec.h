// Encoding of the TM's log records and restart area (formats in src/README.md).
// The reader never trusts its input: running past the end is a Status, not undefined behaviour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "log/little_endian.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::tm {

class ByteWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void U32(uint32_t v) { Fixed(v); }
  void U64(uint64_t v) { Fixed(v); }
  void Id(const Guid& g) {
    for (uint8_t b : g.bytes)
      U8(b);
  }
  void Bytes(std::span<const std::byte> b) {
    U32(static_cast<uint32_t>(b.size()));
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void Text(const std::string& s) { Bytes(std::as_bytes(std::span(s.data(), s.size()))); }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  template <typename T>
  void Fixed(T v) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    log::StoreLe(out_.data() + at, v);
  }
  std::vector<std::byte> out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> in) : in_(in) {}

  bool U8(uint8_t* v) { return Fixed(v); }
  bool U32(uint32_t* v) { return Fixed(v); }
  bool U64(uint64_t* v) { return Fixed(v); }
  bool Id(Guid* g) {
    if (in_.size() - pos_ < g->bytes.size()) return false;
    std::memcpy(g->bytes.data(), in_.data() + pos_, g->bytes.size());
    pos_ += g->bytes.size();
    return true;
  }
  bool Bytes(std::vector<std::byte>* b) {
    uint32_t n;
    if (!U32(&n) || in_.size() - pos_ < n) return false;
    b->assign(in_.begin() + pos_, in_.begin() + pos_ + n);
    pos_ += n;
    return true;
  }
  bool Text(std::string* s) {
    std::vector<std::byte> b;
    if (!Bytes(&b)) return false;
    s->assign(reinterpret_cast<const char*>(b.data()), b.size());
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  template <typename T>
  bool Fixed(T* v) {
    if (in_.size() - pos_ < sizeof(T)) return false;
    *v = log::LoadLe<T>(in_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

}  // namespace ktmfs::tm

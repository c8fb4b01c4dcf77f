#include "src/guid.h"

#include <uuid/uuid.h>

#include <cstring>

namespace ktmfs {

Guid Guid::Random() {
  Guid g;
  uuid_generate_random(g.bytes.data());
  return g;
}

std::optional<Guid> Guid::Parse(std::string_view text) {
  // uuid_parse accepts only the 36-character form but needs a terminated string.
  if (text.size() != 36) return std::nullopt;
  char buf[37];
  std::memcpy(buf, text.data(), 36);
  buf[36] = '\0';
  Guid g;
  if (uuid_parse(buf, g.bytes.data()) != 0) return std::nullopt;
  return g;
}

std::string Guid::ToString() const {
  char buf[37];
  uuid_unparse_lower(bytes.data(), buf);
  return std::string(buf, 36);
}

bool Guid::IsNil() const {
  return uuid_is_null(bytes.data()) != 0;
}

size_t GuidHash::operator()(const Guid& g) const {
  uint64_t a, b;
  std::memcpy(&a, g.bytes.data(), 8);
  std::memcpy(&b, g.bytes.data() + 8, 8);
  return a ^ (b * 0x9e3779b97f4a7c15ULL);
}

}  // namespace ktmfs

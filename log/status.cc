#include "log/status.h"

#include <cstring>

namespace ktmfs {

std::string Status::ToString() const {
  if (ok()) return "OK";
  return message_ + " (" + std::strerror(code_) + ")";
}

}  // namespace ktmfs

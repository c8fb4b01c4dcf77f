#include "log/status.h"

#include <cstring>

namespace ktmfs {

Status Status::FromErrno(int code, const std::string& what) {
  return Error(code, what + ": " + std::strerror(code));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return message_ + " (" + std::strerror(code_) + ")";
}

}  // namespace ktmfs

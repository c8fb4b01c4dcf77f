// The value of the virtual xattr user.ktmfs.tx.begin: empty, or space-separated key=value pairs
//   scope=thread|process|tree   pid=N   timeout=SECONDS   name=TEXT
// A value containing spaces is written in double quotes (name="nightly deploy"); inside
// them a backslash escapes the next character. Unknown keys, repeated keys and malformed values are
// errors (EINVAL), so a typo never silently begins a transaction with defaults.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "fs/control/task_bindings.h"
#include "log/status.h"

namespace ktmfs::fs {

struct BeginOptions {
  Scope scope = Scope::kProcess;
  pid_t pid = 0;             // 0: the caller
  uint32_t timeout_sec = 0;  // 0: none
  std::string name;
};

inline constexpr size_t kMaxBeginNameBytes = 127;

Result<BeginOptions> ParseBeginOptions(std::string_view value);

// The value ParseBeginOptions reads back as `o` (the name quoted and escaped, defaults left
// out): what a program that holds options, not text, sets the attribute to.
std::string FormatBeginOptions(const BeginOptions& o);

}  // namespace ktmfs::fs

// The daemon's command line: ktmfs's own options are taken out here, the rest (libfuse's
// session and mount options) is kept in `Options::fuse_args` and validated by libfuse itself, so
// an unknown option is rejected with libfuse's message naming it.
#pragma once

#include "fs/mount/options.h"
#include "log/status.h"

namespace ktmfs::fs {

// What the command line asks for: run, or print help/version and exit.
struct CommandLine {
  enum class Action { kRun, kHelp, kVersion } action = Action::kRun;
  Options options;
};

Result<CommandLine> ParseCommandLine(int argc, char** argv);

void PrintUsage(const char* program);

}  // namespace ktmfs::fs

// What every ktmfs tool shares: opening the mount, turning errno into the message and exit code
// the man pages document, and the --help/--version conventions.
#pragma once

#include <string>

#include "ktmfs.h"

namespace ktmfs::tools {

// The tool's name for messages ("txbegin"), set once by main.
void SetProgramName(const char* argv0);
const char* ProgramName();

// Prints "PROG: message" to stderr.
[[gnu::format(printf, 1, 2)]] void Warn(const char* fmt, ...);

// Opens `path` (a file or directory on a ktmfs mount) for ioctls. On failure prints why and
// returns -1 with *exit_code set: KTMFS_EXIT_NOT_KTMFS if the path is not on ktmfs,
// KTMFS_EXIT_FAILED if it cannot be opened.
int OpenMount(const std::string& path, int* exit_code);

// Maps a negative errno from a ktmfs_* call to a message naming `path`, prints it after
// `what` ("commit"), and returns the exit code for it.
int ReportError(const std::string& path, const char* what, int neg_errno);

void PrintVersion();

}  // namespace ktmfs::tools

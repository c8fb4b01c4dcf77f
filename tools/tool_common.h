// What every ktmfs tool shares: opening the mount, turning errno into the message and exit code
// the man pages document, and the --help/--version conventions.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
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

// The daemon's own sentence for the caller's last failed request on the mount of `fd`
// (KTMFS_IOC_REASON); empty if it has none (or is older than the request).
std::string DaemonReason(int fd);

// Prints why a ktmfs_* call on `fd` (still open; -1 if none) failed, naming `path` and `what`
// ("commit"): the daemon's sentence when it has one, else a message for the errno. Returns the
// exit code for it.
int ReportError(int fd, const std::string& path, const char* what, int neg_errno);

// Says, after a commit on `fd` answered KTMFS_TXF_APPLY_PENDING, that the transaction is
// committed but not all of it is visible yet, and why (the daemon's sentence).
void WarnApplyPending(int fd, const std::string& path);

// What became of a transaction whose commit (`commit`) or rollback failed with `neg_errno`
// because the daemon serving the mount died, for a message: "its outcome is unknown ..." or
// "the next mount rolls ..."; empty for any other error. The kernel ends a request the daemon
// was serving with ECONNABORTED (a commit's decision may then be durable) and refuses one sent
// after with ENOTCONN.
std::string OutcomeWhenDaemonGone(int neg_errno, bool commit);

void PrintVersion();

// --help and --version, which every tool takes: their values in its getopt_long option table.
enum : int { kHelpOption = 256, kVersionOption };
// Where a tool's option switch ends, for `c` one of those two or an option it does not know:
// prints the help (`usage`) on stdout or the version, and returns KTMFS_EXIT_OK; or prints the
// help on stderr and returns `usage_exit`.
int EndOptions(int c, const std::function<void(FILE*)>& usage, int usage_exit);

// The options txbegin and txrun share. Each checks its argument (and says what is wrong with it,
// returning false) before storing it.
// -t SECONDS: a positive whole number of seconds that fits the begin request.
bool TimeoutOption(const char* text, uint32_t* seconds);
// -n NAME: a description that fits KTMFS_NAME_SIZE with its terminating NUL.
bool NameOption(const char* text, std::string* name);
// A decimal number of at most `max`, with no sign.
bool ParseUnsigned(const char* text, unsigned long max, unsigned long* out);

}  // namespace ktmfs::tools

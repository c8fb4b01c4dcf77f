// Where the daemon's words go. In the foreground (-f) every message goes to standard error;
// a daemon in the background (through mount(8) or fstab it always is) logs to syslog(3), under
// the name "ktmfs" with the daemon's pid, where the journal keeps them: recovery, rollbacks
// nobody asked for, apply failures. Until it has mounted, stderr gets them too (the mount
// command is waiting to say why it failed); once detached, syslog alone. The daemon points
// libfuse's own messages here too (main.cc); this file needs no FUSE.
//
// Library code (log/, src/, fs/tx/) never prints: it returns Status, or reports events through
// a callback the daemon points here.
#pragma once

#include <string>

namespace ktmfs::fs {

enum class LogLevel { kError, kWarning, kNotice, kInfo };

// "ktmfs: <message>" on stderr, or the message at `level` in syslog.
void DaemonLog(LogLevel level, const std::string& message);

// From now on messages go to syslog; to stderr as well while `keep_stderr` (a daemon in the
// background that has not mounted yet: whoever mounts still waits to hear why it fails).
void DaemonLogToSyslog(bool keep_stderr);
// Whether messages go to syslog now.
bool DaemonLogUsesSyslog();

// A user's text (a transaction's description) for a log line: in double quotes, with control
// bytes, quotes and backslashes as \xNN, so that no description can forge or break a line.
std::string QuotedForLog(const std::string& text);

}  // namespace ktmfs::fs

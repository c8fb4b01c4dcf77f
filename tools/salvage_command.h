// `ktmfs-log salvage`: the way past a log whose damage stops the mount, losing only what the
// damage touched and saying what that is. It reads every record that can still be read, decides
// with SalvagePlanner (tools/log_salvage.h) which transactions survive whole, writes those into
// a new log of the same shape, swaps it in atomically (the damaged log is kept beside it, as
// log.damaged-TIME), puts the staged data of the lost transactions aside in
// salvaged-TIME/NAME/ID and writes a report there. The next mount recovers the new log as
// usual. With dry_run it only prints what it would do.
#pragma once

#include <string>

namespace ktmfs::tools {

// `log_dir` holds the log (its base file), `state_dir` is the state directory whose lock covers
// it. Returns the tool's exit status (ktmfs-log(8)); prints to stdout, errors to stderr.
int RunSalvage(const std::string& log_dir, const std::string& state_dir, bool dry_run, bool json);

}  // namespace ktmfs::tools

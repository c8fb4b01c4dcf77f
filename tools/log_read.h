// Reading a whole log the way the offline tools do: every record in LSN order, going on after
// each damaged range the open scan found, so that one bad record does not hide the rest.
#pragma once

#include <functional>
#include <string>

#include "log/log.h"

namespace ktmfs::tools {

// Calls on_record for every readable record of `log`, in LSN order, from the log's start.
// on_damage(begin, end, message) is called where reading skips: for a range the open scan
// found (message empty: log->damaged_ranges() has it), reading resumes at end; for damage it
// did not know of, message says what failed, end is kMaxLsn and reading stops there.
void ReadPastDamage(
    log::Log* log, const std::function<void(const log::Record&)>& on_record,
    const std::function<void(log::Lsn begin, log::Lsn end, const std::string& message)>& on_damage);

}  // namespace ktmfs::tools

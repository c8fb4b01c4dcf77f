#include "tools/log_read.h"

namespace ktmfs::tools {

void ReadPastDamage(log::Log* log, const std::function<void(const log::Record&)>& on_record,
                    const std::function<void(log::Lsn begin, log::Lsn end,
                                             const std::string& message)>& on_damage) {
  log::Lsn from = log::kInvalidLsn, last_read = log::kInvalidLsn;
  log::Record r;
  for (bool resumed = true; resumed;) {
    resumed = false;
    auto cursor = log->ReadAll(from);
    for (;;) {
      auto more = cursor->Next(&r);
      if (!more.ok()) {
        for (const auto& d : log->damaged_ranges()) {
          if (d.end > last_read && d.end > from) {
            from = d.end;
            resumed = true;
            on_damage(d.begin, d.end, "");
            break;
          }
        }
        if (!resumed) on_damage(last_read, log::kMaxLsn, more.status().message());
        break;
      }
      if (!*more) break;
      last_read = r.lsn;
      on_record(r);
    }
  }
}

}  // namespace ktmfs::tools

#include "fs/tx/stream_truncator.h"

#include <algorithm>
#include <utility>

namespace ktmfs::fstx {

StreamTruncator::StreamTruncator(log::Log* log, log::Stream* stream, std::string name)
    : log_(log), stream_(stream), name_(std::move(name)) {}

Result<bool> StreamTruncator::Offer(log::Lsn needed, bool force) {
  if (needed == log::kInvalidLsn) return false;
  // Bytes of log between moves: a MiB, or a sixteenth of a smaller log.
  const log::LogGeometry g = log_->geometry();
  const uint64_t every =
      force ? 1 : std::min<uint64_t>(1 << 20, g.container_size * g.max_containers / 16);
  {
    std::lock_guard l(mu_);
    // LSNs are byte positions in the log's address space: close enough to bytes appended.
    const log::Lsn from = truncated_at_ == log::kInvalidLsn ? stream_->base_lsn() : truncated_at_;
    if (needed < from + every) return false;
    truncated_at_ = needed;
  }
  auto r = stream_->WriteRestartArea({}, needed);
  if (!r.ok()) return r.status().Annotate("fs RM " + name_ + ": truncating its stream");
  return true;
}

}  // namespace ktmfs::fstx

// Gives a resource manager's stream back to the log: moves the stream's base to the oldest
// record an unfinished transaction still needs, with a restart area so the move is durable. It
// does so once enough has been appended since the last move, so that the restart areas cost
// little while what the stream keeps behind its oldest transaction stays a small part of the log.
#pragma once

#include <mutex>
#include <string>

#include "log/log.h"
#include "log/status.h"

namespace ktmfs::fstx {

class StreamTruncator {
 public:
  // `name`: the RM's, for messages.
  StreamTruncator(log::Log* log, log::Stream* stream, std::string name);

  // `needed`: the first record still needed (every record appended later is kept too); the
  // stream's last LSN if none is. `force`: however little was appended since the last move (a
  // clean shutdown). Whether the base moved; an error if its restart area could not be written.
  Result<bool> Offer(log::Lsn needed, bool force = false);

 private:
  log::Log* const log_;
  log::Stream* const stream_;
  const std::string name_;
  std::mutex mu_;
  log::Lsn truncated_at_ = log::kInvalidLsn;  // where the last move put the base
};

}  // namespace ktmfs::fstx

// The protocol check behind `ktmfs-log check`: given every record of a log in LSN order, does
// each transaction's course through the transaction manager's stream and the filesystem
// resource managers' streams follow the protocol that src/ and fs/tx/ write? No I/O here, so
// the rules are tested on synthetic record sequences (tests/tools/log_check_test.cc).
//
// The rules, per transaction and stream (src/README.md and fs/tx/FORMAT.md say why):
//   tm:      ENLIST (one per RM), ENLIST_INFO, then COMMIT (two-phase only, two RMs or more),
//            ABORT (only after a COMMIT whose flush failed), END.
//   fs.NAME: OP..., PREPARED, COMMITTED, APPLIED; or ABORTED in place of what is left (twice
//            when recovery rolls back again what the TM still held in doubt).
// And across them, when the TM's stream is in the same log (so LSN order is append order): an
// RM's records follow its ENLIST, its COMMITTED follows the TM's COMMIT when two-phase, none
// but APPLIED follows the TM's END, and END finds every RM done. A transaction whose start
// lies before what the log still holds (its stream's base, or damage) is checked from where it
// is seen; the TM's restart areas carry the transactions they list.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "log/log.h"
#include "src/guid.h"

namespace ktmfs::logcheck {

struct Violation {
  std::string stream;
  log::Lsn lsn = log::kInvalidLsn;  // kInvalidLsn: about the stream, not one record
  Guid tx;                          // nil: about no one transaction
  std::string what;
};

// A transaction the log leaves open: not damage, it is what the next mount's recovery finishes.
struct InFlight {
  std::string stream;
  Guid tx;
  log::Lsn first = log::kInvalidLsn, last = log::kInvalidLsn;
  std::string state;  // "committed, apply pending", "unfinished", ...
};

// What the next mount's recovery will do with one transaction the log leaves open, as
// FsResourceManager::Recover and TxService decide it: an RM's own COMMITTED, or the TM's COMMIT
// decision, means apply (redo); anything else is rolled back (presumed abort).
struct PlannedStep {
  enum class Action { kApply, kRollBack, kFinish };
  Guid tx;
  std::string stream;  // the fs RM's stream that acts; the TM's when no fs RM holds records
  Action action = Action::kRollBack;
  std::string why;
  bool owner_known = false;  // owner and description, as the TM logged them
  uint32_t owner = 0;
  std::string description;
};

struct CheckReport {
  std::vector<Violation> violations;
  std::vector<InFlight> in_flight;
  std::vector<PlannedStep> plan;
  uint64_t records = 0;
  uint64_t transactions = 0;           // distinct transaction ids
  std::vector<std::string> unchecked;  // streams that are neither the TM's nor an fs RM's
};

class ProtocolChecker {
 public:
  // `streams` and `start_lsn` as the opened log reports them (Log::Streams, geometry); the TM's
  // stream is the one named `tm_stream`, an fs RM's is "fs." followed by its RM's name.
  ProtocolChecker(std::vector<log::StreamInfo> streams, log::Lsn start_lsn,
                  std::string tm_stream = "tm");
  ~ProtocolChecker();
  ProtocolChecker(const ProtocolChecker&) = delete;
  ProtocolChecker& operator=(const ProtocolChecker&) = delete;

  // Every record, in LSN order.
  void Add(const log::Record& r);
  // Records in [begin, end) could not be read: any history across the range may lack records.
  void Damaged(log::Lsn begin, log::Lsn end);
  // Checks what needs the whole log (restart areas, what is left open) and returns everything.
  CheckReport Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "stream fs.root LSN 0x1234 tx <id>: APPLIED without COMMITTED"
std::string ToString(const Violation& v);
// "stream fs.root tx <id>: committed, apply pending"
std::string ToString(const InFlight& f);
// "apply", "roll back", "finish"
const char* ActionName(PlannedStep::Action a);

}  // namespace ktmfs::logcheck

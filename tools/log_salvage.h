// The decision behind `ktmfs-log salvage`: a log with damage before its end stops the mount, and
// salvage rewrites it without what the damage may have cut. Given every record that can still
// be read and where the damage is, which transactions survive whole (their records go into the
// new log, and the next mount recovers them as usual) and which cannot be trusted (left out,
// their staged data put aside and reported). No I/O here, so the rules are unit tested on
// synthetic record sequences (tests/tools/log_check_test.cc, LogSalvage).
//
// The rules, per transaction, from what its filesystem RM streams show (fs/tx/FORMAT.md: OP...,
// PREPARED with the count of OPs, COMMITTED, APPLIED; or ABORTED). Kept:
//  - finished (APPLIED or ABORTED): nothing left to do;
//  - decided to commit (its RM's COMMITTED or the TM's COMMIT) with every OP its PREPARED
//    counts, and no damage after the decision (where its APPLIED could be): the next mount
//    redoes it (redoing one whose APPLIED was lost could undo later commits over it);
//  - prepared with every OP and no damage after its PREPARED: in doubt, the TM decides;
//  - unfinished (not prepared) with no damage after its first record: rolled back.
// Lost (left out, its staged data put aside and reported): a committed or prepared one with
// fewer OPs than PREPARED counts, or a commit without its PREPARED; and one whose PREPARED or
// decision may be in the damage, since it may have been acknowledged and partly applied: also
// one the TM enlisted of which the RM's stream shows nothing after its base, with damage after
// the enlistment (ended, its RM's COMMITTED may have had its apply pending). A transaction lost in
// one stream is left out of every stream, the TM's included.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "log/log.h"
#include "src/guid.h"

namespace ktmfs::salvage {

struct Lost {
  Guid tx;
  std::string stream;  // the fs stream whose records condemned it
  // It committed (its COMMITTED or the TM's COMMIT was read, or the TM ended it and the RM's
  // outcome is what was damaged): it may have been acknowledged.
  bool committed = false;
  std::string why;
};

struct SalvagePlan {
  std::vector<Lost> lost;          // in order of their first record
  uint64_t records_read = 0;       // records that could be read
  uint64_t records_kept = 0;       // of them, those the new log gets
  uint64_t transactions_kept = 0;  // distinct transactions with records kept
  // Whether a record is kept: by its transaction (records of no transaction are kept).
  bool Keeps(const Guid& tx) const;
};

class SalvagePlanner {
 public:
  // `streams` as the opened log reports them; the TM's stream is `tm_stream`, an fs RM's is
  // "fs." followed by its name. Other streams' records are kept as they are.
  explicit SalvagePlanner(std::vector<log::StreamInfo> streams, std::string tm_stream = "tm");
  ~SalvagePlanner();
  SalvagePlanner(const SalvagePlanner&) = delete;
  SalvagePlanner& operator=(const SalvagePlanner&) = delete;

  // Every readable record, in LSN order.
  void Add(const log::Record& r);
  // Records in [begin, end) could not be read.
  void Damaged(log::Lsn begin, log::Lsn end);
  SalvagePlan Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The transaction a record belongs to (nil for restart areas and records of other streams).
Guid TransactionOf(const log::Record& r, const std::string& stream, const std::string& tm_stream);

}  // namespace ktmfs::salvage

// Space for apply, reserved at prepare: once a commit is decided, a full backing filesystem
// must not stop its apply half way (contract §3: everything that could make apply fail is
// checked before the decision).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fs/tx/apply_plan.h"
#include "fs/tx/writer_identity.h"
#include "log/status.h"

namespace ktmfs::fstx {

// Allocates, without changing any size (FALLOC_FL_KEEP_SIZE), every range apply will write
// into an existing file of `plan`, found at its original path under `backing_root`. ENOSPC
// or EDQUOT naming the file when the backing filesystem cannot hold them. Where the filesystem
// overwrites in place (overwrite_in_place.h), a range the file has every block of is skipped. New
// files need nothing: their staged files are renamed into place. Best effort otherwise: a
// filesystem without fallocate, or a file the daemon cannot open for writing, reserves nothing
// (apply then reports what fails, and the commit stays pending).
// `record_owner`: whose space the ranges of small writes, whose data the records carry, take
// (writer_identity.h); staged data took its writers' space already, and its ranges are taken as
// the daemon.
Status ReserveApplySpace(const std::string& backing_root, const ApplyPlan& plan,
                         std::optional<WriterIds> record_owner = std::nullopt);

// What apply allocates besides file data: room in each directory that gains names, and in its
// parking directory (a name per object moved or removed), for the worst an ext4 directory may
// grow by (DirectoryGrowth in the .cc: up to a block per new name where each lands in a full
// block), and room for the xattrs it sets. Taken now as a placeholder file fallocated in
// the transaction's staging directory, which apply removes before its first step
// (RemovePlaceholder), so the blocks it frees are there for apply's own allocations (ext4 retries
// an allocation that failed once its journal commit has freed blocks). ENOSPC or EDQUOT if they are
// not there. Best effort: a writer that races in between may still take them (fs/TRANSACTIONS.md,
// limits). The directories are found under `backing_root` as they are before apply.
Status ReserveMetadataSpace(const std::string& backing_root, const std::string& staging_dir,
                            const ApplyPlan& plan);
Status RemovePlaceholder(const std::string& staging_dir);

// Whether `xattrs` (name, value) fit together on one file (a directory, with `dir`) of the
// filesystem of `staging_dir`, tried on a probe file there named after the calling thread. 0,
// or the errno (ENOSPC, E2BIG, ERANGE, EDQUOT) of the first that does not fit; another error of
// the probe itself is not the values' and counts as fitting: the commit's ProbeXattrs asks
// again.
int XattrsFitTogether(const std::string& staging_dir, bool dir,
                      const std::vector<std::pair<std::string, std::string>>& xattrs);

// Sets, on a probe file in the staging directory, the xattrs each object will have after apply
// (its present ones, changed by the transaction's): what the backing filesystem cannot hold (a
// value too big for its blocks, no space) refuses the commit now, with the error apply would
// have met after the decision. The probe is removed again.
Status ProbeXattrs(const std::string& backing_root, const std::string& staging_dir,
                   const ApplyPlan& plan);

}  // namespace ktmfs::fstx

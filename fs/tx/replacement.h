// Replacing an existing file at apply. Written in place, a file a reader reads while apply
// changes it, or whose size the reader's kernel cached before the commit, can read as part old
// and part new. So apply gives a file the transaction rewrote whole (every byte after the
// commit comes from it: truncated and written again, or overwritten from the first byte to the
// end) its new content as a file of its own, with the old one's owner, mode and xattrs, and
// exchanges the two names (fs/TRANSACTIONS.md, "Replacing files"): the name changes from the
// old content to the new in one step. A reader that opens the file afresh gets one or the
// other, whole, and a descriptor opened before keeps reading the old content, as after an
// editor's save by rename. When the writes went to a staged file, that file is the new
// content: the data is written once.
//
// A file changed only in part is written in place: whoever holds it open (a database's readers,
// with their record locks, which belong to the inode) must go on reaching the one file.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fs/tx/records.h"
#include "log/status.h"

namespace ktmfs::fstx {

// When apply may replace a file the transaction rewrote whole, asked per object at the commit.
enum class ReplaceWhen {
  // The transaction still has the file open: its descriptors must go on reaching the committed
  // file, so it is written in place.
  kNever,
  // No one else can hold a size or pages of it from before the commit, so writing in place
  // tears nothing: it is replaced only where that saves copying its data (its staged file is the
  // new content), and written in place where its new data is in the records anyway.
  kIfWrittenOnce,
  // A reader may hold a size or pages from before the commit: replaced whenever rewritten whole.
  kIfWhole,
};

struct Replacement {
  // The object's staged file, if any of its writes went to one: then it is the whole new
  // content (and durable: prepare synced it).
  std::string staged_file;
  // The object's writes and size changes, in log order: without a staged file, replayed on an
  // empty file they give the new content.
  std::vector<const Op*> data_ops;
};

// Whether `ops` (a plan's content operations) rewrite object `id`, of size `size_now`, whole.
// The bytes below the smallest size it had in between (its size now, or a truncate) are the
// only ones that could come from the old content; if the writes cover all of them, none do. A
// size now larger than the committed one (an earlier run wrote part of it in place) only
// makes the answer no more often, never wrongly yes.
std::optional<Replacement> FindReplacement(const std::vector<Op>& ops, const ObjectId& id,
                                           uint64_t size_now);

// Gives `to` (a descriptor of the new content) the owner, mode, access time and xattrs of the
// file `from` leads to (a /proc/self/fd link, or a name in staging), whose stat is `st`, and
// drops xattrs that file lacks; its modification time becomes now, as a write's would. The
// file capability is not carried (the kernel drops it on any write or truncate), nor are the
// integrity xattrs (security.ima, security.evm), which describe the old content.
Status CopyOwnerModeXattrs(const char* from, const struct stat& st, int to,
                           const std::string& shown);

}  // namespace ktmfs::fstx

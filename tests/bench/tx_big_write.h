// The big-transaction rows of tx_bench: one file written in large chunks and made durable,
// either natively (write, fsync) or as one ktmfs transaction (begin, write, commit).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/bench/tx_reader_probe.h"

namespace ktmfs::bench {

struct BigWrite {
  bool ktmfs = false;     // one transaction on a ktmfs mount; else write + fsync natively
  bool existing = false;  // overwrite a file of the same size made beforehand; else a new file
  std::string dir;        // where the file goes (on the mount for ktmfs)
  uint64_t bytes = 0;
  // Existing file only: where the writes start. Above 0 the bytes before it stay, so the
  // commit changes the file in part, and apply writes it in place instead of replacing it.
  uint64_t from = 0;
  size_t chunk = 1 << 20;
  // For ktmfs: runs while the commit is under way (from the call until it returns).
  ReaderProbe* probe = nullptr;
};

// Times the write of `w.bytes` in `w.chunk` writes until it is durable: fsync of the file (and
// of the directory for a new file) natively, the commit for ktmfs. Preparing the existing
// file, checking the result and removing the file are not timed. "" or a message.
std::string TimeBigWrite(const BigWrite& w, double* seconds);
// The file TimeBigWrite writes.
std::string BigWritePath(const BigWrite& w);

}  // namespace ktmfs::bench

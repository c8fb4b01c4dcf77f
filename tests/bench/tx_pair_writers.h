// The ways tx_bench makes a client's two small files durable: a ktmfs transaction (as a program
// does it, or as a script does), the careful POSIX replacement of each file, and one SQLite
// transaction holding both blobs.
// Every method returns "" on success or a message naming the file, database or transaction.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace ktmfs::bench {

inline constexpr size_t kBlobSize = 4096;

using Blob = std::vector<char>;

// A 4 KiB blob whose every byte says which client and which commit wrote it, so a read-back
// can tell the last commit from an older one.
Blob StampedBlob(int client, int slot, unsigned long commit);

// One client's pair of files (or rows). Not thread-safe: one writer per client thread.
class PairWriter {
 public:
  virtual ~PairWriter() = default;
  // Stores `a` and `b` and returns once both are durable.
  virtual std::string Commit(const Blob& a, const Blob& b) = 0;
  // Reads what the last commit stored, as any other process would see it.
  virtual std::string ReadBack(Blob* a, Blob* b) = 0;
};

// kKtmfs: ioctls, and pwrite into each file as it is. kKtmfsScript: the control xattrs, and
// each file opened with O_CREAT | O_TRUNC and written whole, as a shell's `>` does.
enum class PairSystem { kKtmfs, kKtmfsScript, kPosix, kSqlite };

// Creates what every client's writer needs under `root` (the SQLite database; directories),
// before the clients start. `root` is a directory on the mount for kKtmfs.
std::string PreparePairs(PairSystem system, const std::string& root, int clients);

// One writer for client `client`; its files (or rows) exist with an initial content once this
// returns. With kKtmfs and kKtmfsScript, each Commit is one transaction bound to the calling
// thread.
std::string OpenPairWriter(PairSystem system, const std::string& root, int client,
                           std::unique_ptr<PairWriter>* out);

// Whether the ktmfs mount at `root` serves transactions: begins one bound to the calling
// thread and rolls it back. "" if it does, else why not.
std::string ProbeKtmfsTransactions(const std::string& root);

}  // namespace ktmfs::bench

// Writes a small real log for the ktmfs-log tests: a "tm" stream with transaction records and a
// restart area, and an "rm" stream, each flushed separately.
//   make_log DIR               a sound log
//   make_log DIR damage        then flips a byte inside the first record (damage, not a tail)
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "fs/tx/records.h"
#include "log/log.h"
#include "src/tm_records.h"

namespace klog = ktmfs::log;
namespace ktm = ktmfs::tm;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_log DIR [damage]\n");
    return 2;
  }
  const std::string dir = argv[1];
  auto storage = klog::OpenUringStorage(dir);
  if (!storage.ok()) return std::fprintf(stderr, "%s\n", storage.status().ToString().c_str()), 1;
  klog::LogOptions opts;
  opts.container_size = 1 << 20;
  auto log = klog::Log::Open(storage->get(), opts);
  if (!log.ok()) return std::fprintf(stderr, "%s\n", log.status().ToString().c_str()), 1;
  klog::Stream* tms = *(*log)->OpenStream("tm");
  klog::Stream* rms = *(*log)->OpenStream("rm");

  ktm::TxImage tx;
  tx.id = *ktmfs::Guid::Parse("0a1b2c3d-0000-4000-8000-000000000001");
  tx.owner = 1000;
  tx.description = "sample";
  ktm::EnlistmentImage e;
  e.rm = *ktmfs::Guid::Parse("0a1b2c3d-0000-4000-8000-0000000000aa");
  e.rm_name = "data";
  std::vector<std::byte> data(300, std::byte{0x5a});
  klog::Lsn first = *rms->Append({.type = 0x6601, .payload = data});
  (void)rms->Flush(first);
  auto enlist = ktm::EncodeEnlist(tx, e);
  klog::Lsn l = *tms->Append({.type = uint16_t(ktm::TmRecordType::kEnlist), .payload = enlist});
  (void)tms->Flush(l);
  tx.enlistments.push_back(e);
  tx.decision = ktm::Decision::kCommit;
  auto commit = ktm::EncodeCommit(tx);
  l = *tms->Append({.type = uint16_t(ktm::TmRecordType::kCommit), .payload = commit});
  (void)tms->Flush(l);
  auto end = ktm::EncodeTxId(tx.id);
  l = *tms->Append({.type = uint16_t(ktm::TmRecordType::kEnd), .payload = end});
  (void)tms->Flush(l);
  (void)*tms->WriteRestartArea(ktm::EncodeRestartArea({}));
  // A filesystem RM's stream with one operation of the same transaction.
  klog::Stream* fss = *(*log)->OpenStream("data");
  ktmfs::fstx::Record op;
  op.tx = tx.id;
  op.op.kind = ktmfs::fstx::OpKind::kRename;
  op.op.path = "releases/next";
  op.op.path2 = "current";
  auto op_bytes = ktmfs::fstx::EncodeRecord(op);
  l = *fss->Append({.type = ktmfs::fstx::kFsRecordType, .payload = op_bytes});
  (void)fss->Flush(l);
  if (!(*log)->Close().ok()) return 1;
  std::printf("first rm record at 0x%llx\n", static_cast<unsigned long long>(first));

  if (argc > 2 && std::strcmp(argv[2], "damage") == 0) {
    // The first record's payload, in the first container (logical 1 is container.000000).
    int fd = open((dir + "/container.000000").c_str(), O_RDWR);
    if (fd < 0) return 1;
    off_t at = static_cast<off_t>(first % opts.container_size) + 150;
    unsigned char b;
    if (pread(fd, &b, 1, at) != 1) return 1;
    b ^= 0x40;
    if (pwrite(fd, &b, 1, at) != 1 || fsync(fd) != 0) return 1;
    close(fd);
  }
  return 0;
}

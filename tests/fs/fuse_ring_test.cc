// The message rules of FUSE over io_uring (fs/fuse/fuse_ring.h), on entries laid out as the kernel
// fills them: a request rebuilt in the legacy /dev/fuse layout in front of its payload, a reply
// packed from libfuse's iovecs, the two commands' SQEs, and the sizes the kernel asks for.
#include "fs/fuse/fuse_ring.h"

#include <gtest/gtest.h>
#include <liburing.h>
#include <linux/fuse.h>

#include <cstring>
#include <string>
#include <vector>

#include "fs/fuse/kernel_channel.h"

namespace ktmfs::fs {
namespace {

// An entry's memory: the header area, and a payload with the legacy slack in front of it.
struct FakeEntry {
  RingHeaders h{};
  std::vector<char> buffer = std::vector<char>(kRingLegacySlack + 4096, '\x55');
  char* payload() { return buffer.data() + kRingLegacySlack; }
  size_t cap() const { return buffer.size() - kRingLegacySlack; }
};

// Fills the entry as the kernel does for a request whose first argument is `arg0` and whose
// other arguments, concatenated, are `rest`.
void KernelFills(FakeEntry* e, uint32_t opcode, uint64_t unique, const void* arg0, size_t arg0_len,
                 const std::string& rest) {
  fuse_in_header in{};
  in.opcode = opcode;
  in.unique = unique;
  in.nodeid = 1;
  in.len = static_cast<uint32_t>(sizeof in + arg0_len + rest.size());
  std::memcpy(e->h.in_out, &in, sizeof in);
  if (arg0_len > 0) std::memcpy(e->h.op_in, arg0, arg0_len);
  std::memcpy(e->payload(), rest.data(), rest.size());
  e->h.ent_in_out.commit_id = unique;
  e->h.ent_in_out.payload_sz = static_cast<uint32_t>(rest.size());
}

TEST(FuseRingTest, WriteIsRebuiltAsDevFuseDeliversIt) {
  FakeEntry e;
  fuse_write_in w{};
  w.fh = 9;
  w.offset = 4096;
  w.size = 5;
  KernelFills(&e, FUSE_WRITE, 42, &w, sizeof w, "hello");
  size_t len = 0;
  Result<char*> at = LegacyRequestAt(e.h, e.payload(), e.cap(), &len);
  ASSERT_TRUE(at.ok()) << at.status().message();
  ASSERT_EQ(len, sizeof(fuse_in_header) + sizeof w + 5);
  // Contiguous, ending at the payload's data: nothing of the payload was moved.
  EXPECT_EQ(*at + len, e.payload() + 5);
  fuse_in_header in;
  std::memcpy(&in, *at, sizeof in);
  EXPECT_EQ(in.opcode, uint32_t{FUSE_WRITE});
  EXPECT_EQ(in.unique, 42u);
  EXPECT_EQ(in.len, len);
  fuse_write_in got;
  std::memcpy(&got, *at + sizeof in, sizeof got);
  EXPECT_EQ(got.fh, 9u);
  EXPECT_EQ(got.offset, 4096u);
  EXPECT_EQ(std::string(*at + sizeof in + sizeof got, 5), "hello");
  // And the channel reads it like a request read from the device.
  RequestFacts f = InspectRequest(*at, len);
  EXPECT_EQ(f.opcode, uint32_t{FUSE_WRITE});
  EXPECT_EQ(f.unique, 42u);
}

TEST(FuseRingTest, RequestWithoutFixedArgumentKeepsItsName) {
  // LOOKUP: the kernel sends an empty first argument and the name in the payload.
  FakeEntry e;
  KernelFills(&e, FUSE_LOOKUP, 7, nullptr, 0, std::string("name\0", 5));
  size_t len = 0;
  Result<char*> at = LegacyRequestAt(e.h, e.payload(), e.cap(), &len);
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(len, sizeof(fuse_in_header) + 5);
  EXPECT_STREQ(*at + sizeof(fuse_in_header), "name");
}

TEST(FuseRingTest, InconsistentSizesAreRefused) {
  FakeEntry e;
  fuse_write_in w{};
  KernelFills(&e, FUSE_WRITE, 1, &w, sizeof w, "abc");
  size_t len = 0;
  // A payload larger than the header's length says.
  e.h.ent_in_out.payload_sz = 1000;
  EXPECT_EQ(LegacyRequestAt(e.h, e.payload(), e.cap(), &len).status().code(), EPROTO);
  // A payload larger than the entry.
  e.h.ent_in_out.payload_sz = static_cast<uint32_t>(e.cap() + 1);
  EXPECT_EQ(LegacyRequestAt(e.h, e.payload(), e.cap(), &len).status().code(), EPROTO);
  // A first argument larger than its area.
  fuse_in_header in;
  std::memcpy(&in, e.h.in_out, sizeof in);
  in.len = static_cast<uint32_t>(sizeof in + kRingOpInSize + 1 + 3);
  std::memcpy(e.h.in_out, &in, sizeof in);
  e.h.ent_in_out.payload_sz = 3;
  EXPECT_EQ(LegacyRequestAt(e.h, e.payload(), e.cap(), &len).status().code(), EPROTO);
}

TEST(FuseRingTest, ReplyIsPackedIntoHeaderAndPayload) {
  FakeEntry e;
  fuse_out_header out{};
  out.unique = 42;
  fuse_attr_out attr{};
  attr.attr.ino = 77;
  const char tail[] = "xyz";
  out.len = sizeof out + sizeof attr + 3;
  iovec iov[3] = {{&out, sizeof out}, {&attr, sizeof attr}, {const_cast<char*>(tail), 3}};
  Result<size_t> n = PackReply(iov, 3, &e.h, e.payload(), e.cap());
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, out.len);
  fuse_out_header got;
  std::memcpy(&got, e.h.in_out, sizeof got);
  EXPECT_EQ(got.unique, 42u);
  EXPECT_EQ(e.h.ent_in_out.payload_sz, sizeof attr + 3);
  fuse_attr_out got_attr;
  std::memcpy(&got_attr, e.payload(), sizeof got_attr);
  EXPECT_EQ(got_attr.attr.ino, 77u);
  EXPECT_EQ(std::string(e.payload() + sizeof attr, 3), "xyz");
}

TEST(FuseRingTest, SplicedReplyInOneBufferIsSplitAtTheHeader) {
  // A reply read back from a splice pipe: header and data in one piece.
  FakeEntry e;
  std::vector<char> whole(sizeof(fuse_out_header) + 10, 'd');
  fuse_out_header out{};
  out.unique = 5;
  out.len = static_cast<uint32_t>(whole.size());
  std::memcpy(whole.data(), &out, sizeof out);
  iovec iov{whole.data(), whole.size()};
  ASSERT_TRUE(PackReply(&iov, 1, &e.h, e.payload(), e.cap()).ok());
  EXPECT_EQ(e.h.ent_in_out.payload_sz, 10u);
  EXPECT_EQ(std::string(e.payload(), 10), std::string(10, 'd'));
}

TEST(FuseRingTest, ReplyBuiltInThePayloadIsNotCopied) {
  FakeEntry e;
  std::memcpy(e.payload(), "already", 7);
  fuse_out_header out{};
  out.unique = 3;
  iovec iov[2] = {{&out, sizeof out}, {e.payload(), 7}};
  ASSERT_TRUE(PackReply(iov, 2, &e.h, e.payload(), e.cap()).ok());
  EXPECT_EQ(std::string(e.payload(), 7), "already");
  EXPECT_EQ(e.h.ent_in_out.payload_sz, 7u);
}

TEST(FuseRingTest, OversizedOrHeaderlessReplyIsRefused) {
  FakeEntry e;
  fuse_out_header out{};
  std::vector<char> big(e.cap() + 1);
  iovec iov[2] = {{&out, sizeof out}, {big.data(), big.size()}};
  EXPECT_EQ(PackReply(iov, 2, &e.h, e.payload(), e.cap()).status().code(), EOVERFLOW);
  iovec short_iov{&out, 8};
  EXPECT_EQ(PackReply(&short_iov, 1, &e.h, e.payload(), e.cap()).status().code(), EPROTO);
}

TEST(FuseRingTest, CommandsAreLaidOutInTheBigSqe) {
  io_uring_sqe sqes[2];
  std::memset(sqes, 0xff, sizeof sqes);
  iovec two[2] = {};
  PrepareRegister(&sqes[0], 17, 3, two);
  EXPECT_EQ(sqes[0].opcode, IORING_OP_URING_CMD);
  EXPECT_EQ(sqes[0].fd, 17);
  EXPECT_EQ(sqes[0].cmd_op, kRingCmdRegister);
  EXPECT_EQ(sqes[0].addr, reinterpret_cast<uint64_t>(two));
  EXPECT_EQ(sqes[0].len, 2u);
  EXPECT_EQ(sqes[0].flags, 0u);
  RingCmdReq req;
  std::memcpy(&req, sqes[0].cmd, sizeof req);
  EXPECT_EQ(req.qid, 3u);
  EXPECT_EQ(req.commit_id, 0u);
  EXPECT_EQ(req.flags, 0u);
  // The rest of the 80-byte command area is zero, as the kernel expects.
  const unsigned char* cmd = sqes[0].cmd;
  for (size_t i = sizeof req; i < 80; ++i)
    ASSERT_EQ(cmd[i], 0) << i;

  std::memset(sqes, 0xff, sizeof sqes);
  PrepareCommitAndFetch(&sqes[0], 17, 1, 99);
  EXPECT_EQ(sqes[0].cmd_op, kRingCmdCommitAndFetch);
  EXPECT_EQ(sqes[0].addr, 0u);
  EXPECT_EQ(sqes[0].len, 0u);
  std::memcpy(&req, sqes[0].cmd, sizeof req);
  EXPECT_EQ(req.qid, 1u);
  EXPECT_EQ(req.commit_id, 99u);
}

TEST(FuseRingTest, CpuListsAreCounted) {
  EXPECT_EQ(CountCpuList("0\n"), 1u);
  EXPECT_EQ(CountCpuList("0-1\n"), 2u);
  EXPECT_EQ(CountCpuList("0-3,8-9,12"), 7u);
  EXPECT_EQ(CountCpuList(""), 0u);
  EXPECT_EQ(CountCpuList("x"), 0u);
  EXPECT_EQ(CountCpuList("3-1"), 0u);
}

TEST(FuseRingTest, PayloadSizeIsTheKernelsLargest) {
  EXPECT_EQ(RingPayloadSize(0, 0, 4096), size_t{FUSE_MIN_READ_BUFFER});
  EXPECT_EQ(RingPayloadSize(128 * 1024, 32, 4096), size_t{128 * 1024});
  EXPECT_EQ(RingPayloadSize(1024 * 1024, 256, 4096), size_t{1024 * 1024});
  EXPECT_EQ(RingPayloadSize(4096, 256, 4096), size_t{1024 * 1024});
}

TEST(FuseRingTest, InitTakesTheRingOnlyWhenOfferedAndWanted) {
  ChannelWants wants;
  wants.killpriv_v2 = false;
  wants.uring = true;
  const uint64_t offer = kInitOverIoUring | FUSE_INIT_EXT;
  EXPECT_EQ(InitFlagsToAdd(offer, wants), kInitOverIoUring);
  EXPECT_EQ(InitFlagsToAdd(kInitOverIoUring, wants), 0u);  // flags2 needs INIT_EXT
  EXPECT_EQ(InitFlagsToAdd(FUSE_INIT_EXT, wants), 0u);
  wants.uring = false;
  EXPECT_EQ(InitFlagsToAdd(offer, wants), 0u);
}

TEST(FuseRingTest, NoReplyIsTakenWithoutARing) {
  fuse_out_header out{};
  out.unique = 12;
  iovec iov{&out, sizeof out};
  EXPECT_FALSE(FuseRing::TakeReply(&iov, 1));
  EXPECT_FALSE(FuseRing::ThisThreadOwesReply());
}

}  // namespace
}  // namespace ktmfs::fs

// The message rules of the daemon's /dev/fuse channel (fs/fuse/kernel_channel.h): which requests
// ask the daemon to clear set-id bits, what the kernel offers in INIT, and the patch of the INIT
// reply, on messages laid out as the kernel and libfuse 3.14 lay them out.
#include "fs/fuse/kernel_channel.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>

#include <cstring>
#include <vector>

namespace ktmfs::fs {
namespace {

template <typename Arg>
std::vector<char> Request(uint32_t opcode, uint64_t unique, const Arg& arg) {
  fuse_in_header h{};
  h.opcode = opcode;
  h.unique = unique;
  h.len = sizeof h + sizeof arg;
  std::vector<char> buf(sizeof h + sizeof arg);
  std::memcpy(buf.data(), &h, sizeof h);
  std::memcpy(buf.data() + sizeof h, &arg, sizeof arg);
  return buf;
}

TEST(KernelChannelTest, WriteFlagAsksToClearSetidBits) {
  fuse_write_in w{};
  w.write_flags = FUSE_WRITE_KILL_SUIDGID;
  auto buf = Request(FUSE_WRITE, 7, w);
  RequestFacts f = InspectRequest(buf.data(), buf.size());
  EXPECT_EQ(f.opcode, uint32_t{FUSE_WRITE});
  EXPECT_EQ(f.unique, 7u);
  EXPECT_TRUE(f.kill_suidgid);
  w.write_flags = FUSE_WRITE_CACHE | FUSE_WRITE_LOCKOWNER;
  buf = Request(FUSE_WRITE, 8, w);
  EXPECT_FALSE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
}

TEST(KernelChannelTest, OpenAndCreateFlagsAskToClearSetidBits) {
  fuse_open_in o{};
  o.open_flags = FUSE_OPEN_KILL_SUIDGID;
  auto buf = Request(FUSE_OPEN, 1, o);
  EXPECT_TRUE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
  fuse_create_in c{};
  c.open_flags = FUSE_OPEN_KILL_SUIDGID;
  buf = Request(FUSE_CREATE, 2, c);
  EXPECT_TRUE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
  c.open_flags = 0;
  buf = Request(FUSE_CREATE, 3, c);
  EXPECT_FALSE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
}

TEST(KernelChannelTest, TruncateFlagSaysTheCallerLacksFsetidButChownsDoNot) {
  fuse_setattr_in s{};
  s.valid = FATTR_SIZE | FATTR_KILL_SUIDGID;
  auto buf = Request(FUSE_SETATTR, 4, s);
  EXPECT_TRUE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
  // The kernel marks every chown of a non-directory, whoever asks.
  s.valid = FATTR_UID | FATTR_KILL_SUIDGID;
  buf = Request(FUSE_SETATTR, 5, s);
  EXPECT_FALSE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
  s.valid = FATTR_SIZE;
  buf = Request(FUSE_SETATTR, 6, s);
  EXPECT_FALSE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
}

TEST(KernelChannelTest, OtherOpcodesWithTheSameBitsAskNothing) {
  // FUSE_FALLOCATE's first word is the handle; its low bit is no kill flag.
  fuse_fallocate_in a{};
  a.fh = 1;
  auto buf = Request(FUSE_FALLOCATE, 4, a);
  EXPECT_FALSE(InspectRequest(buf.data(), buf.size()).kill_suidgid);
}

TEST(KernelChannelTest, ShortRequestsYieldOnlyTheirHeader) {
  fuse_write_in w{};
  w.write_flags = FUSE_WRITE_KILL_SUIDGID;
  auto buf = Request(FUSE_WRITE, 9, w);
  RequestFacts f = InspectRequest(buf.data(), sizeof(fuse_in_header) + 8);
  EXPECT_EQ(f.unique, 9u);
  EXPECT_FALSE(f.kill_suidgid);
  EXPECT_EQ(InspectRequest(buf.data(), 10).opcode, 0u);
}

TEST(KernelChannelTest, InitOfferIncludesFlags2OnlyWithInitExt) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = 41;
  in.flags = FUSE_HANDLE_KILLPRIV_V2 | FUSE_INIT_EXT;
  in.flags2 = 1;
  auto buf = Request(FUSE_INIT, 1, in);
  RequestFacts f = InspectRequest(buf.data(), buf.size());
  EXPECT_EQ(f.init_major, 7u);
  EXPECT_EQ(f.init_minor, 41u);
  EXPECT_EQ(f.init_flags, (uint64_t{1} << 32) | FUSE_HANDLE_KILLPRIV_V2 | FUSE_INIT_EXT);
  in.flags = FUSE_HANDLE_KILLPRIV_V2;
  buf = Request(FUSE_INIT, 1, in);
  EXPECT_EQ(InspectRequest(buf.data(), buf.size()).init_flags, uint64_t{FUSE_HANDLE_KILLPRIV_V2});
  // An old kernel's INIT: four words only.
  buf.resize(sizeof(fuse_in_header) + 16);
  EXPECT_EQ(InspectRequest(buf.data(), buf.size()).init_flags, uint64_t{FUSE_HANDLE_KILLPRIV_V2});
}

TEST(KernelChannelTest, KillprivV2IsTakenOnlyWhenOfferedAndWanted) {
  ChannelWants yes, no;
  no.killpriv_v2 = false;
  EXPECT_EQ(InitFlagsToAdd(FUSE_HANDLE_KILLPRIV_V2 | FUSE_ASYNC_READ, yes),
            uint32_t{FUSE_HANDLE_KILLPRIV_V2});
  EXPECT_EQ(InitFlagsToAdd(FUSE_ASYNC_READ, yes), 0u);
  EXPECT_EQ(InitFlagsToAdd(FUSE_HANDLE_KILLPRIV_V2, no), 0u);
}

TEST(KernelChannelTest, PassthroughIsTakenOnlyWhenOfferedWithInitExtAndWanted) {
  ChannelWants yes, no;
  yes.passthrough = true;
  const uint64_t offer = kInitPassthrough | FUSE_INIT_EXT | FUSE_HANDLE_KILLPRIV_V2;
  EXPECT_EQ(InitFlagsToAdd(offer, yes), kInitPassthrough | FUSE_HANDLE_KILLPRIV_V2);
  EXPECT_EQ(InitFlagsToAdd(offer, no), uint64_t{FUSE_HANDLE_KILLPRIV_V2});
  // Without FUSE_INIT_EXT the kernel would not read flags2.
  EXPECT_EQ(InitFlagsToAdd(kInitPassthrough, yes), 0u);
}

struct InitReply {
  fuse_out_header h{};
  fuse_init_out out{};
  iovec iov[2];
  explicit InitReply(uint64_t unique, int32_t error = 0) {
    h.unique = unique;
    h.error = error;
    out.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES;
    iov[0] = {&h, sizeof h};
    iov[1] = {&out, sizeof out};
  }
};

TEST(KernelChannelTest, InitReplyGetsTheFlagsKeepingItsOwn) {
  InitReply r(5);
  EXPECT_TRUE(AddInitReplyFlags(r.iov, 2, 5, FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(r.out.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_HANDLE_KILLPRIV_V2});
}

TEST(KernelChannelTest, OtherRepliesAreLeftAlone) {
  InitReply other(6);
  EXPECT_FALSE(AddInitReplyFlags(other.iov, 2, 5, FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(other.out.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES});
  InitReply refused(5, -EPROTO);
  EXPECT_FALSE(AddInitReplyFlags(refused.iov, 2, 5, FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(refused.out.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES});
  InitReply header_only(5);
  EXPECT_FALSE(AddInitReplyFlags(header_only.iov, 1, 5, FUSE_HANDLE_KILLPRIV_V2));
  InitReply short_arg(5);
  short_arg.iov[1].iov_len = 8;  // ends before `flags`
  EXPECT_FALSE(AddInitReplyFlags(short_arg.iov, 2, 5, FUSE_HANDLE_KILLPRIV_V2));
}

TEST(KernelChannelTest, PassthroughGoesIntoFlags2WithInitExtAndAStackDepthOfOne) {
  InitReply r(5);
  ASSERT_TRUE(AddInitReplyFlags(r.iov, 2, 5, kInitPassthrough | FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(r.out.flags,
            uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_HANDLE_KILLPRIV_V2 | FUSE_INIT_EXT});
  EXPECT_EQ(r.out.flags2, uint32_t{kInitPassthrough >> 32});
  uint32_t depth;
  std::memcpy(&depth, reinterpret_cast<const char*>(&r.out) + kInitMaxStackDepthAt, sizeof depth);
  EXPECT_EQ(depth, 1u);
  // A reply too short to carry the stack depth is not half-patched.
  InitReply short_arg(5);
  short_arg.iov[1].iov_len = kInitMaxStackDepthAt;
  EXPECT_FALSE(AddInitReplyFlags(short_arg.iov, 2, 5, kInitPassthrough));
  EXPECT_EQ(short_arg.out.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES});
  EXPECT_EQ(short_arg.out.flags2, 0u);
}

// The reply to OPEN (fuse_open_out) or CREATE (fuse_entry_out, then fuse_open_out) as libfuse
// lays it out: the header, then one argument buffer.
struct OpenReply {
  fuse_out_header h{};
  struct {
    fuse_entry_out entry;
    fuse_open_out open;
  } create{};
  iovec iov[2];
  OpenReply(uint64_t unique, bool is_create, int32_t error = 0) {
    h.unique = unique;
    h.error = error;
    create.open.fh = 42;
    create.open.open_flags = FOPEN_NOFLUSH;
    create.entry.nodeid = 7;
    iov[0] = {&h, sizeof h};
    iov[1] = is_create ? iovec{&create, sizeof create} : iovec{&create.open, sizeof create.open};
  }
  int32_t backing_id() const {
    int32_t id;
    std::memcpy(&id, &create.open.padding, sizeof id);
    return id;
  }
};

TEST(KernelChannelTest, OpenAndCreateRepliesCarryTheBackingId) {
  for (bool is_create : {false, true}) {
    OpenReply r(9, is_create);
    ASSERT_TRUE(SetOpenReplyPassthrough(r.iov, 2, 9, 3)) << is_create;
    EXPECT_EQ(r.create.open.open_flags, FOPEN_NOFLUSH | kOpenPassthrough);
    EXPECT_EQ(r.backing_id(), 3);
    EXPECT_EQ(r.create.open.fh, 42u);
    EXPECT_EQ(r.create.entry.nodeid, 7u);
  }
  // Not this request's reply, an error, or no argument: untouched.
  OpenReply other(10, false), refused(9, false, -EACCES), bare(9, false);
  EXPECT_FALSE(SetOpenReplyPassthrough(other.iov, 2, 9, 3));
  EXPECT_FALSE(SetOpenReplyPassthrough(refused.iov, 2, 9, 3));
  EXPECT_FALSE(SetOpenReplyPassthrough(bare.iov, 1, 9, 3));
  for (const OpenReply* r : {&other, &refused, &bare}) {
    EXPECT_EQ(r->create.open.open_flags, uint32_t{FOPEN_NOFLUSH});
    EXPECT_EQ(r->backing_id(), 0);
  }
}

}  // namespace
}  // namespace ktmfs::fs

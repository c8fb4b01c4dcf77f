#include "fs/control/control_decode.h"

#include <gtest/gtest.h>

#include <climits>
#include <cstring>
#include <vector>

#include "ktmfs.h"

namespace ktmfs::fs {
namespace {

template <typename T>
Result<ControlRequest> Decode(unsigned int cmd, const T& arg) {
  return DecodeControlIoctl(cmd, &arg, sizeof arg, sizeof arg);
}

int Errno(const Result<ControlRequest>& r) {
  return r.ok() ? 0 : r.status().code();
}

TEST(ControlDecodeTest, SetxattrNames) {
  auto begin = DecodeControlSetxattr(KTMFS_XATTR_BEGIN, "scope=thread");
  ASSERT_TRUE(begin.ok()) << begin.status().ToString();
  EXPECT_EQ(begin->op, ControlOp::kBegin);
  EXPECT_EQ(begin->begin.scope, Scope::kThread);
  // Commit and rollback ignore their values, whatever they hold.
  auto commit = DecodeControlSetxattr(KTMFS_XATTR_COMMIT, std::string_view("\0\xff", 2));
  ASSERT_TRUE(commit.ok());
  EXPECT_EQ(commit->op, ControlOp::kCommit);
  EXPECT_TRUE(commit->id.IsNil());
  EXPECT_EQ(DecodeControlSetxattr(KTMFS_XATTR_ROLLBACK, "x")->op, ControlOp::kRollback);
  // The rest of the prefix is reserved, the get-only names included.
  for (const char* name : {"user.ktmfs.", "user.ktmfs.tx", "user.ktmfs.tx.holder",
                           "user.ktmfs.tx.begin2", "user.ktmfs.tx.Begin", "user.ktmfs.tx.begin "}) {
    EXPECT_EQ(Errno(DecodeControlSetxattr(name, "")), EPERM) << name;
  }
  // A name with a NUL inside is not the name before the NUL.
  EXPECT_EQ(Errno(DecodeControlSetxattr(std::string_view("user.ktmfs.tx.commit\0x", 22), "")),
            EPERM);
  EXPECT_EQ(Errno(DecodeControlSetxattr(KTMFS_XATTR_BEGIN, "colour=red")), EINVAL);
}

TEST(ControlDecodeTest, GetxattrNames) {
  EXPECT_EQ(DecodeControlGetxattr(KTMFS_XATTR_TX)->op, ControlOp::kQuery);
  EXPECT_EQ(DecodeControlGetxattr(KTMFS_XATTR_HOLDER)->op, ControlOp::kHolder);
  for (const char* name : {"user.ktmfs.", "user.ktmfs.tx.begin", "user.ktmfs.tx.commit",
                           "user.ktmfs.TX", "user.ktmfs.tx.holderx"}) {
    EXPECT_EQ(Errno(DecodeControlGetxattr(name)), ENODATA) << name;
  }
}

TEST(ControlDecodeTest, EveryCommandNeedsItsOwnSizeBothWays) {
  std::vector<char> buf(sizeof(ktmfs_list_args) + 8, 0);
  const std::pair<unsigned int, size_t> commands[] = {
      {KTMFS_IOC_HELLO, sizeof(ktmfs_hello_args)}, {KTMFS_IOC_BEGIN, sizeof(ktmfs_begin_args)},
      {KTMFS_IOC_COMMIT, sizeof(ktmfs_txid)},      {KTMFS_IOC_ROLLBACK, sizeof(ktmfs_txid)},
      {KTMFS_IOC_QUERY, sizeof(ktmfs_txid)},       {KTMFS_IOC_HOLDER, sizeof(ktmfs_txid)},
      {KTMFS_IOC_LIST, sizeof(ktmfs_list_args)},   {KTMFS_IOC_RECENT, sizeof(ktmfs_recent_args)}};
  for (auto [cmd, size] : commands) {
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, buf.data(), size, size)), 0) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, buf.data(), size - 1, size)), EINVAL) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, buf.data(), size + 1, size)), EINVAL) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, buf.data(), size, 0)), EINVAL) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, buf.data(), 0, size)), EINVAL) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, nullptr, size, size)), EINVAL) << cmd;
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, nullptr, 0, 0)), EINVAL) << cmd;
  }
}

TEST(ControlDecodeTest, OtherCommandsAreNotOurs) {
  ktmfs_txid t{};
  // A command is its whole number: another size, direction or number is another command.
  for (unsigned int cmd :
       {unsigned(_IOWR(KTMFS_IOC_MAGIC, 7, struct ktmfs_txid)),
        unsigned(_IOWR(KTMFS_IOC_MAGIC, 255, struct ktmfs_txid)),
        unsigned(_IOR(KTMFS_IOC_MAGIC, 4, struct ktmfs_txid)),
        unsigned(_IOW(KTMFS_IOC_MAGIC, 2, struct ktmfs_txid)),
        unsigned(_IOWR(KTMFS_IOC_MAGIC, 2, struct ktmfs_hello_args)),
        unsigned(_IO(KTMFS_IOC_MAGIC, 0)), unsigned(_IOWR('f', 2, struct ktmfs_txid)), 0u, ~0u}) {
    EXPECT_EQ(Errno(DecodeControlIoctl(cmd, &t, _IOC_SIZE(cmd), _IOC_SIZE(cmd))), ENOTTY) << cmd;
  }
}

TEST(ControlDecodeTest, Begin) {
  ktmfs_begin_args b{};
  auto r = Decode(KTMFS_IOC_BEGIN, b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->op, ControlOp::kBegin);
  EXPECT_EQ(r->begin.scope, Scope::kProcess);  // 0 is the default scope
  EXPECT_EQ(r->begin.pid, 0);

  b.scope = KTMFS_SCOPE_TREE;
  b.pid = INT32_MAX;
  b.timeout_sec = UINT32_MAX;
  std::memset(b.name, 'n', sizeof b.name - 1);
  std::memset(b.id, 0xff, sizeof b.id);  // output only: anything goes in
  r = Decode(KTMFS_IOC_BEGIN, b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->begin.scope, Scope::kTree);
  EXPECT_EQ(r->begin.pid, INT32_MAX);
  EXPECT_EQ(r->begin.timeout_sec, UINT32_MAX);
  EXPECT_EQ(r->begin.name, std::string(kMaxBeginNameBytes, 'n'));
  // What follows the name's NUL is padding.
  b.name[3] = '\0';
  r = Decode(KTMFS_IOC_BEGIN, b);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->begin.name, "nnn");

  auto bad = [](auto change) {
    ktmfs_begin_args a{};
    change(a);
    return Errno(Decode(KTMFS_IOC_BEGIN, a));
  };
  EXPECT_EQ(bad([](auto& a) { a.flags = 1; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { a.flags = 0x80000000u; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { a.scope = KTMFS_SCOPE_TREE + 1; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { a.scope = UINT32_MAX; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { a.pid = -1; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { a.pid = INT32_MIN; }), EINVAL);
  EXPECT_EQ(bad([](auto& a) { std::memset(a.name, 'x', sizeof a.name); }), EINVAL);
}

TEST(ControlDecodeTest, BeginMeansWhatItsTextSays) {
  ktmfs_begin_args b{};
  b.scope = KTMFS_SCOPE_THREAD;
  b.pid = 42;
  b.timeout_sec = 7;
  std::strcpy(b.name, "say \"hi\" \\ there\n");
  auto r = Decode(KTMFS_IOC_BEGIN, b);
  ASSERT_TRUE(r.ok());
  auto x = DecodeControlSetxattr(KTMFS_XATTR_BEGIN, FormatBeginOptions(r->begin));
  ASSERT_TRUE(x.ok()) << FormatBeginOptions(r->begin) << ": " << x.status().ToString();
  EXPECT_EQ(x->begin.scope, Scope::kThread);
  EXPECT_EQ(x->begin.pid, 42);
  EXPECT_EQ(x->begin.timeout_sec, 7u);
  EXPECT_EQ(x->begin.name, b.name);
}

TEST(ControlDecodeTest, CommitAndRollbackIds) {
  ktmfs_txid t{};
  auto r = Decode(KTMFS_IOC_COMMIT, t);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->op, ControlOp::kCommit);
  EXPECT_TRUE(r->id.IsNil());  // the caller's own

  std::strcpy(t.id, "0A1B2C3D-0000-4000-8000-00000000000F");
  r = Decode(KTMFS_IOC_ROLLBACK, t);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->op, ControlOp::kRollback);
  EXPECT_EQ(r->id.ToString(), "0a1b2c3d-0000-4000-8000-00000000000f");

  auto bad_id = [](const char* text, size_t n) {
    ktmfs_txid u{};
    std::memcpy(u.id, text, n);
    return Errno(Decode(KTMFS_IOC_COMMIT, u));
  };
  EXPECT_EQ(bad_id("0a1b2c3d-0000-4000-8000-00000000000", 35), EINVAL);    // short
  EXPECT_EQ(bad_id("0a1b2c3d-0000-4000-8000-00000000000ff", 37), EINVAL);  // long
  EXPECT_EQ(bad_id("0a1b2c3d-0000-4000-8000-00000000000g", 36), EINVAL);
  EXPECT_EQ(bad_id("0a1b2c3d00000-4000-8000-00000000000f", 36), EINVAL);
  EXPECT_EQ(bad_id(" a1b2c3d-0000-4000-8000-00000000000f", 36), EINVAL);
  std::string full(KTMFS_ID_SIZE, '0');  // no NUL anywhere in the field
  EXPECT_EQ(bad_id(full.data(), full.size()), EINVAL);

  t = {};
  t.flags = 1;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_COMMIT, t)), EINVAL);
  t = {};
  t.reserved = UINT32_MAX;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_ROLLBACK, t)), EINVAL);
}

TEST(ControlDecodeTest, QueryAndHolderIgnoreTheirOutputField) {
  ktmfs_txid t{};
  std::memset(t.id, 'z', sizeof t.id);
  EXPECT_EQ(Decode(KTMFS_IOC_QUERY, t)->op, ControlOp::kQuery);
  EXPECT_EQ(Decode(KTMFS_IOC_HOLDER, t)->op, ControlOp::kHolder);
  t.flags = 2;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_QUERY, t)), EINVAL);
  t.flags = 0;
  t.reserved = 1;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_HOLDER, t)), EINVAL);
}

TEST(ControlDecodeTest, ListCapacityAndStart) {
  ktmfs_list_args l{};
  l.start = UINT32_MAX;
  l.capacity = KTMFS_LIST_MAX;
  l.count = UINT32_MAX;  // output fields: anything goes in
  l.total = UINT32_MAX;
  auto r = Decode(KTMFS_IOC_LIST, l);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->op, ControlOp::kList);
  EXPECT_EQ(r->list_start, UINT32_MAX);
  EXPECT_EQ(r->list_capacity, uint32_t{KTMFS_LIST_MAX});
  l.capacity = KTMFS_LIST_MAX + 1;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_LIST, l)), EINVAL);
  l.capacity = UINT32_MAX;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_LIST, l)), EINVAL);
}

TEST(ControlDecodeTest, RecentCapacityAndStart) {
  ktmfs_recent_args l{};
  l.start = 7;
  l.capacity = KTMFS_RECENT_MAX;
  l.total = UINT32_MAX;  // output fields: anything goes in
  auto r = Decode(KTMFS_IOC_RECENT, l);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->op, ControlOp::kRecent);
  EXPECT_EQ(r->list_start, 7u);
  EXPECT_EQ(r->list_capacity, uint32_t{KTMFS_RECENT_MAX});
  l.capacity = KTMFS_RECENT_MAX + 1;
  EXPECT_EQ(Errno(Decode(KTMFS_IOC_RECENT, l)), EINVAL);
}

}  // namespace
}  // namespace ktmfs::fs

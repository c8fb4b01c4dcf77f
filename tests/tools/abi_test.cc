// The ioctl structs are an ABI shared with programs built separately (and possibly for 32-bit):
// sizes and offsets are pinned here so a change to them is a deliberate act.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <iterator>
#include <string>

#include "ktmfs.h"

namespace {

static_assert(sizeof(ktmfs_hello_args) == 32);
static_assert(sizeof(ktmfs_begin_args) == 184);
static_assert(offsetof(ktmfs_begin_args, name) == 16);
static_assert(offsetof(ktmfs_begin_args, id) == 144);
static_assert(sizeof(ktmfs_txid) == 48);
static_assert(sizeof(ktmfs_tx_info) == 152);
static_assert(offsetof(ktmfs_tx_info, begin_time_ns) == 56);
static_assert(sizeof(ktmfs_list_args) == 16 + KTMFS_LIST_MAX * sizeof(ktmfs_tx_info));
// FUSE passes at most 16 KiB of ioctl data in restricted mode.
static_assert(sizeof(ktmfs_list_args) <= 16384);
static_assert(sizeof(ktmfs_ended_info) == 264);
static_assert(offsetof(ktmfs_ended_info, begin_time_ns) == 56);
static_assert(sizeof(ktmfs_recent_args) == 16 + KTMFS_RECENT_MAX * sizeof(ktmfs_ended_info));
static_assert(sizeof(ktmfs_recent_args) <= 16384);

TEST(AbiTest, IoctlEncodingsCarryTheStructSizes) {
  EXPECT_EQ(_IOC_SIZE(KTMFS_IOC_BEGIN), sizeof(ktmfs_begin_args));
  EXPECT_EQ(_IOC_SIZE(KTMFS_IOC_LIST), sizeof(ktmfs_list_args));
  EXPECT_EQ(_IOC_SIZE(KTMFS_IOC_RECENT), sizeof(ktmfs_recent_args));
  EXPECT_EQ(_IOC_DIR(KTMFS_IOC_COMMIT), unsigned{_IOC_READ | _IOC_WRITE});
  EXPECT_EQ(_IOC_TYPE(KTMFS_IOC_QUERY), unsigned{KTMFS_IOC_MAGIC});
}

TEST(AbiTest, CommandsAreDistinct) {
  const unsigned long cmds[] = {KTMFS_IOC_HELLO,    KTMFS_IOC_BEGIN,  KTMFS_IOC_COMMIT,
                                KTMFS_IOC_ROLLBACK, KTMFS_IOC_QUERY,  KTMFS_IOC_HOLDER,
                                KTMFS_IOC_LIST,     KTMFS_IOC_REASON, KTMFS_IOC_RECENT};
  for (size_t i = 0; i < std::size(cmds); ++i)
    for (size_t j = i + 1; j < std::size(cmds); ++j)
      EXPECT_NE(cmds[i], cmds[j]);
}

TEST(AbiTest, BeginRefusesOverlongNameWithoutCallingTheKernel) {
  std::string name(KTMFS_NAME_SIZE, 'x');
  EXPECT_EQ(ktmfs_begin(-1, KTMFS_SCOPE_TREE, 0, 0, name.c_str(), nullptr), -ENAMETOOLONG);
}

TEST(AbiTest, HelloSaysNotKtmfsForAPlainDirectory) {
  int fd = open("/", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ktmfs_hello(fd, nullptr), -ENOTTY);
  close(fd);
}

}  // namespace

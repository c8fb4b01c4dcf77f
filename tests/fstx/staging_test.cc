#include "fs/tx/staging.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

std::span<const std::byte> B(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string ReadAll(StagedFile* f, uint64_t offset = 0, size_t len = 4096) {
  std::string out(len, '?');
  auto n = f->Read(offset, std::as_writable_bytes(std::span(out.data(), out.size())));
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  out.resize(n.ok() ? *n : 0);
  return out;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class StagingTest : public ::testing::Test {
 protected:
  TempDir tmp;
  std::string root() { return tmp.path() + "/staging/rm1"; }
};

TEST_F(StagingTest, NewFileIsStagedWhole) {
  Guid tx = Guid::Random();
  auto st = TxStaging::Create(root(), tx);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto f = (*st)->NewFile("n1");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Write(0, B("hello")).ok());
  ASSERT_TRUE((*f)->Write(8, B("world")).ok());
  EXPECT_EQ((*f)->size(), 13u);
  EXPECT_EQ(ReadAll(*f), std::string("hello\0\0\0world", 13));
  EXPECT_EQ(ReadAll(*f, 3, 3), std::string("lo\0", 3));
  EXPECT_EQ(Slurp((*st)->dir() + "/n1"), std::string("hello\0\0\0world", 13));
  EXPECT_EQ((*st)->dir(), root() + "/" + tx.ToString());
}

TEST_F(StagingTest, UnwrittenRangesReadThroughToCommittedFile) {
  std::string committed = tmp.path() + "/committed";
  WriteFile(committed, "0123456789");
  int cfd = ::open(committed.c_str(), O_RDONLY);
  ASSERT_GE(cfd, 0);
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  auto f = (*st)->FileFor("e1", cfd);
  ::close(cfd);  // the staged file keeps its own descriptor
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->size(), 10u);
  ASSERT_TRUE((*f)->Write(3, B("abc")).ok());
  ASSERT_TRUE((*f)->Write(12, B("Z")).ok());
  EXPECT_EQ(ReadAll(*f), std::string("012abc6789\0\0Z", 13));
  EXPECT_EQ((*f)->written(), (std::vector<Extent>{{3, 3}, {12, 1}}));
  // The committed file is untouched.
  EXPECT_EQ(Slurp(committed), "0123456789");
  // Same name, same staged file.
  auto again = (*st)->FileFor("e1", 0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *f);
}

TEST_F(StagingTest, TruncateHidesCommittedBytesBeyondIt) {
  std::string committed = tmp.path() + "/committed";
  WriteFile(committed, "0123456789");
  int cfd = ::open(committed.c_str(), O_RDONLY);
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  auto f = (*st)->FileFor("e1", cfd);
  ::close(cfd);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Write(1, B("xy")).ok());
  ASSERT_TRUE((*f)->Truncate(4).ok());
  EXPECT_EQ(ReadAll(*f), "0xy3");
  ASSERT_TRUE((*f)->Truncate(8).ok());  // growing again: the cut bytes come back as zeros
  EXPECT_EQ(ReadAll(*f), std::string("0xy3\0\0\0\0", 8));
  ASSERT_TRUE((*f)->Write(6, B("Q")).ok());
  EXPECT_EQ(ReadAll(*f), std::string("0xy3\0\0Q\0", 8));
  ASSERT_TRUE((*f)->Truncate(2).ok());
  EXPECT_EQ(ReadAll(*f), "0x");
  EXPECT_EQ((*f)->written(), (std::vector<Extent>{{1, 1}}));
}

// Big aligned writes are queued to the device (async_direct_writer.h): Settle, reads, a truncate
// and the sync that prepare makes all see them, over the committed bytes they replace, and the
// staged file on disk is exactly the transaction's content, no longer (space is allocated
// ahead of the writes, never past the end).
TEST_F(StagingTest, QueuedBigWritesAreSeenByReadsTruncateAndSync) {
  const std::string committed_path = tmp.path() + "/committed";
  std::string committed(4 << 20, 'c');
  WriteFile(committed_path, committed);
  int cfd = ::open(committed_path.c_str(), O_RDONLY);
  ASSERT_GE(cfd, 0);
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  auto f = (*st)->FileFor("e1", cfd);
  ::close(cfd);
  ASSERT_TRUE(f.ok());
  std::string want = committed;
  for (int i = 0; i < 20; ++i) {
    // Out of order, and the last ones past the committed end.
    const uint64_t offset = static_cast<uint64_t>((i * 7) % 20) * (256 << 10);
    std::string data(256 << 10, static_cast<char>('A' + i));
    ASSERT_TRUE((*f)->Write(offset, B(data)).ok());
    if (want.size() < offset + data.size()) want.resize(offset + data.size(), '\0');
    want.replace(offset, data.size(), data);
  }
  EXPECT_EQ((*f)->size(), want.size());
  // Settle (a transaction's fsync) waits for them: another descriptor of the staged file then
  // reads what was written, where the committed file supplies nothing.
  ASSERT_TRUE((*f)->Settle().ok());
  std::string on_disk_now(want.size(), '\0');
  const int sfd = ::open(((*st)->dir() + "/e1").c_str(), O_RDONLY);
  ASSERT_GE(sfd, 0);
  const ssize_t got = ::pread(sfd, on_disk_now.data(), on_disk_now.size(), 0);
  ::close(sfd);
  ASSERT_EQ(got, static_cast<ssize_t>(want.size()));
  for (int i = 0; i < 20; ++i) {
    const uint64_t offset = static_cast<uint64_t>((i * 7) % 20) * (256 << 10);
    EXPECT_EQ(on_disk_now.substr(offset, 256 << 10), want.substr(offset, 256 << 10)) << i;
  }
  EXPECT_EQ(ReadAll(*f, 0, want.size() + 10), want);
  ASSERT_TRUE((*f)->Truncate(want.size() - 1000).ok());
  want.resize(want.size() - 1000);
  ASSERT_TRUE((*st)->Sync().ok());
  struct stat on_disk;
  ASSERT_EQ(::stat(((*st)->dir() + "/e1").c_str(), &on_disk), 0);
  EXPECT_EQ(static_cast<uint64_t>(on_disk.st_size), want.size());
  EXPECT_EQ(ReadAll(*f, 0, want.size()), want);
}

// A change the log refused after it reached the staged file: the file disagrees with the
// records, so prepare's sync refuses, naming the file and the log's reason; reads still work.
TEST_F(StagingTest, AChangeTheLogRefusedRefusesTheSync) {
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  auto f = (*st)->NewFile("n1");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Write(0, B("kept")).ok());
  ASSERT_TRUE((*st)->Sync().ok());
  ASSERT_TRUE((*f)->Write(0, B("lost")).ok());
  (*f)->Unlogged(Status::Error(ENOSPC, "the log is full"));
  Status s = (*st)->Sync();
  EXPECT_EQ(s.code(), EIO);
  EXPECT_NE(s.ToString().find("n1 holds a change the log refused"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.ToString().find("the log is full"), std::string::npos) << s.ToString();
  EXPECT_EQ(ReadAll(*f), "lost");
}

// A refused change that was the transaction's first to an existing file: its staged contents
// go, and the file is staged anew, over the committed file as it is then, by the next change.
TEST_F(StagingTest, ADroppedFileReadsTheCommittedOneUntilStagedAgain) {
  const std::string committed = tmp.path() + "/committed";
  WriteFile(committed, "0123456789");
  int cfd = ::open(committed.c_str(), O_RDONLY);
  ASSERT_GE(cfd, 0);
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  auto f = (*st)->FileFor("e1", cfd);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE((*f)->WriteLogged(2, B("ab")).ok());
  ASSERT_TRUE((*f)->Write(12, B("refused")).ok());
  ASSERT_TRUE((*f)->on_disk());
  (*st)->Drop("e1");
  EXPECT_EQ((*st)->Find("e1"), nullptr);
  EXPECT_TRUE((*st)->file_names().empty());
  struct stat sb;
  EXPECT_NE(::stat(((*st)->dir() + "/e1").c_str(), &sb), 0);
  // A reader that still holds it reads the committed file.
  EXPECT_EQ(ReadAll(*f), "0123456789");
  EXPECT_TRUE((*f)->written().empty());
  EXPECT_TRUE((*st)->Sync().ok());
  // Changed by others once the lock went; staged again over that.
  WriteFile(committed, "abcdefghijklmno");
  auto again = (*st)->FileFor("e1", cfd);
  ::close(cfd);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *f);
  EXPECT_EQ((*st)->Find("e1"), *f);
  EXPECT_EQ((*again)->size(), 15u);
  EXPECT_EQ(ReadAll(*again), "abcdefghijklmno");
  ASSERT_TRUE((*again)->Write(1, B("X")).ok());  // on disk again: made anew
  EXPECT_EQ(ReadAll(*again), "aXcdefghijklmno");
  EXPECT_EQ((*st)->file_names(), std::vector<std::string>{"e1"});
  ASSERT_TRUE((*st)->Discard().ok());
}

TEST_F(StagingTest, SyncThenDiscardRemovesEverything) {
  Guid tx = Guid::Random();
  auto st = TxStaging::Create(root(), tx);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE((*st)->NewFile("a").ok());
  ASSERT_TRUE((*(*st)->NewFile("b"))->Write(0, B("data")).ok());
  EXPECT_EQ((*st)->file_names(), (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE((*st)->Sync().ok());
  // Recovery can open it by transaction id and discard it.
  auto reopened = TxStaging::Open(root(), tx);
  ASSERT_TRUE(reopened.ok());
  ASSERT_TRUE((*st)->Discard().ok());
  struct stat sb;
  EXPECT_NE(::stat((root() + "/" + tx.ToString()).c_str(), &sb), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_TRUE(::stat(root().c_str(), &sb) == 0 && S_ISDIR(sb.st_mode));
  auto gone = TxStaging::Open(root(), tx);
  EXPECT_EQ(gone.status().code(), ENOENT);
}

TEST_F(StagingTest, XattrValuesAreKeptInTheStagingDirectoryAndReadBack) {
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok());
  const std::string first(70000, 'a');
  const std::string second = "a second value, stored after the first";
  auto a = (*st)->StoreValue(first);
  auto b = (*st)->StoreValue(second);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  EXPECT_EQ(a->offset, 0u);
  EXPECT_EQ(b->offset, first.size());
  auto ra = (*st)->LoadValue(*a);
  auto rb = (*st)->LoadValue(*b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(*ra, first);
  EXPECT_EQ(*rb, second);
  EXPECT_EQ(Slurp((*st)->dir() + "/" + kValueFileName), first + second);
  // A value the file does not hold is an error naming the file, never a short value.
  auto past = (*st)->LoadValue({.offset = first.size(), .size = 1000});
  EXPECT_EQ(past.status().code(), EIO);
  EXPECT_NE(past.status().message().find(kValueFileName), std::string::npos);
  ASSERT_TRUE((*st)->Discard().ok());
}

TEST_F(StagingTest, NamesAreNeverReused) {
  Guid tx = Guid::Random();
  auto st = TxStaging::Create(root(), tx);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE((*st)->NewFile("first").ok());  // makes the directory
  // A second staging for the same transaction id is refused rather than mixed in, when it
  // would make the directory.
  auto second = TxStaging::Create(root(), tx);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->NewFile("other").status().code(), EEXIST);
  // Names must be single components.
  EXPECT_EQ((*st)->NewFile("../x").status().code(), EINVAL);
  EXPECT_EQ((*st)->NewFile("").status().code(), EINVAL);
  // A staged name that exists on disk but not in memory is refused (O_EXCL).
  WriteFile((*st)->dir() + "/stray", "x");
  EXPECT_EQ((*st)->NewFile("stray").status().code(), EEXIST);
}

TEST_F(StagingTest, LoggedWritesAreHeldInMemoryUntilTheyOutgrowIt) {
  const std::string committed = tmp.path() + "/committed";
  WriteFile(committed, "0123456789");
  int cfd = ::open(committed.c_str(), O_RDONLY);
  ASSERT_GE(cfd, 0);
  Guid tx = Guid::Random();
  auto st = TxStaging::Create(root(), tx);
  ASSERT_TRUE(st.ok());
  auto f = (*st)->FileFor("e1", cfd);
  ::close(cfd);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteLogged(2, B("ab")).ok());
  ASSERT_TRUE((*f)->WriteLogged(12, B("xy")).ok());
  ASSERT_TRUE((*f)->Truncate(13).ok());
  EXPECT_EQ(ReadAll(*f), std::string("01ab456789\0\0x", 13));
  // Nothing on disk, not even the directory, and nothing to sync.
  struct stat sb;
  EXPECT_NE(::stat((*st)->dir().c_str(), &sb), 0);
  EXPECT_FALSE((*f)->on_disk());
  EXPECT_TRUE((*st)->file_names().empty());
  EXPECT_TRUE((*st)->Sync().ok());
  EXPECT_NE(::stat((*st)->dir().c_str(), &sb), 0);
  // A write past the memory extent puts the file on disk with everything written before.
  ASSERT_TRUE((*f)->WriteLogged(StagedFile::kMemoryExtent, B("z")).ok());
  EXPECT_TRUE((*f)->on_disk());
  EXPECT_EQ((*st)->file_names(), std::vector<std::string>{"e1"});
  std::string disk = Slurp((*st)->dir() + "/e1");
  ASSERT_EQ(disk.size(), StagedFile::kMemoryExtent + 1);
  EXPECT_EQ(disk.substr(0, 13), std::string("\0\0ab\0\0\0\0\0\0\0\0x", 13));
  EXPECT_EQ(ReadAll(*f, 0, 13), std::string("01ab456789\0\0x", 13));
  EXPECT_EQ(ReadAll(*f, StagedFile::kMemoryExtent, 4), "z");
}

TEST_F(StagingTest, APlainWritePutsAHeldFileOnDisk) {
  const std::string committed = tmp.path() + "/committed";
  WriteFile(committed, "abc");
  int cfd = ::open(committed.c_str(), O_RDONLY);
  Guid tx = Guid::Random();
  auto st = TxStaging::Create(root(), tx);
  auto f = (*st)->FileFor("e2", cfd);
  ::close(cfd);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteLogged(0, B("X")).ok());
  EXPECT_FALSE((*f)->on_disk());
  // A plain write is one an op names the staged file for: it must be there.
  ASSERT_TRUE((*f)->Write(2, B("Z")).ok());
  EXPECT_TRUE((*f)->on_disk());
  EXPECT_EQ(Slurp((*st)->dir() + "/e2"), std::string("X\0Z", 3));
  EXPECT_EQ(ReadAll(*f), "XbZ");
}

}  // namespace
}  // namespace ktmfs::fstx

namespace ktmfs::fstx {
namespace {

// A transaction that creates many files holds a bounded number of descriptors for them: a
// file's is closed when others are used, and opened again by name when it is used again.
TEST_F(StagingTest, ManyFilesHoldFewDescriptors) {
  auto st = TxStaging::Create(root(), Guid::Random());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const size_t before = OpenDescriptors();
  constexpr int kFiles = 300;
  std::vector<StagedFile*> files;
  for (int i = 0; i < kFiles; ++i) {
    auto f = (*st)->NewFile("n" + std::to_string(i));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->Write(0, B("file " + std::to_string(i))).ok());
    files.push_back(*f);
  }
  // The staging directory's own descriptor, and at most kOpenFiles files.
  EXPECT_LE(OpenDescriptors(), before + 1 + TxStaging::kOpenFiles);
  // Every file reads, grows, shrinks and syncs through a descriptor opened again.
  for (int i = 0; i < kFiles; ++i) {
    const std::string want = "file " + std::to_string(i);
    ASSERT_EQ(ReadAll(files[i]), want) << i;
    ASSERT_TRUE(files[i]->Write(want.size(), B("!")).ok());
    ASSERT_TRUE(files[i]->Truncate(want.size() + 1).ok());
  }
  ASSERT_TRUE((*st)->Sync().ok());
  EXPECT_LE(OpenDescriptors(), before + 1 + TxStaging::kOpenFiles);
  for (int i = 0; i < kFiles; i += 37)
    EXPECT_EQ(Slurp((*st)->dir() + "/n" + std::to_string(i)), "file " + std::to_string(i) + "!");
  ASSERT_TRUE((*st)->Discard().ok());
  EXPECT_LE(OpenDescriptors(), before);
}

}  // namespace
}  // namespace ktmfs::fstx

// The committed files a transaction's staged files read through to: kept open up to
// TxStaging::kCommittedOpen, then closed and opened again by handle, so a transaction may
// change more existing files than the daemon may have open.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "fs/tx/object_handle.h"
#include "fs/tx/staging.h"
#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

std::span<const std::byte> B(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

Result<std::string> ReadAll(StagedFile* f) {
  std::string out(256, '?');
  auto n = f->Read(0, std::as_writable_bytes(std::span(out.data(), out.size())));
  if (!n.ok()) return n.status();
  out.resize(*n);
  return out;
}

// Each file's contents, or the error reading it gave.
std::vector<std::string> ReadEach(const std::vector<StagedFile*>& files) {
  std::vector<std::string> read;
  for (StagedFile* f : files) {
    auto r = ReadAll(f);
    read.push_back(r.ok() ? *r : r.status().ToString());
  }
  return read;
}

// Lowers this process's soft RLIMIT_NOFILE to `room` more descriptors than are open now, for
// as long as it lives.
class LowFileLimit {
 public:
  explicit LowFileLimit(size_t room) {
    if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
    rlimit low = saved_;
    low.rlim_cur = OpenDescriptors() + room;
    ok_ = low.rlim_cur <= saved_.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &low) == 0;
  }
  ~LowFileLimit() {
    if (ok_) ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

class CommittedDescriptorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_fd_ = ::open(tmp_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(mount_fd_, 0);
    int mount_id = 0;
    int err = 0;
    if (!HandlesWork(mount_fd_, &mount_id, &err))
      GTEST_SKIP() << "objects cannot be opened by handle here (" << strerror(err)
                   << "): staged files keep every committed descriptor";
    auto st = TxStaging::Create(tmp_.path() + "/staging", Guid::Random());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    staging_ = std::move(*st);
  }
  void TearDown() override {
    staging_.reset();
    if (mount_fd_ >= 0) ::close(mount_fd_);
  }

  // Stages the existing file `name` (made with `content` first) as the daemon does, counting
  // what the staging charges.
  Result<StagedFile*> Stage(const std::string& name, const std::string& content,
                            TxStaging* staging = nullptr) {
    const std::string path = tmp_.path() + "/" + name;
    WriteFile(path, content);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("open " + path);
    auto handle = ObjectHandle::Of(fd);
    if (staging == nullptr) staging = staging_.get();
    auto f = staging->FileFor(name, CommittedFile(fd, handle, mount_fd_), [this] {
      charged_++;
      return Status::Ok();
    });
    ::close(fd);
    return f;
  }

  TempDir tmp_;
  int mount_fd_ = -1;
  std::unique_ptr<TxStaging> staging_;
  size_t charged_ = 0;
};

// Before, each staged file kept its committed file open until the transaction ended: with the
// process's limit lower than the files staged, staging failed with EMFILE ("dup committed
// file"), and a transaction rewriting 20,000 files could not commit.
TEST_F(CommittedDescriptorsTest, MoreFilesThanTheProcessMayOpenStageAndReadThrough) {
  const size_t files = TxStaging::kCommittedOpen + 400;
  std::vector<StagedFile*> staged;
  Status failed = Status::Ok();
  std::vector<std::string> read;
  const size_t before = OpenDescriptors();
  {
    LowFileLimit low(TxStaging::kCommittedOpen + TxStaging::kOpenFiles + 100);
    ASSERT_TRUE(low.ok()) << "the test needs a higher file limit to start with";
    // An eighth of the limit, so that other transactions and the daemon's own work have room.
    const size_t budget = TxStaging::CommittedBudget();
    EXPECT_EQ(budget, (before + TxStaging::kCommittedOpen + TxStaging::kOpenFiles + 100) / 8);
    for (size_t i = 0; i < files && failed.ok(); ++i) {
      auto f = Stage("f" + std::to_string(i), "committed " + std::to_string(i));
      if (!f.ok()) {
        failed = f.status();
        break;
      }
      // Only the first byte changes: the rest reads through to the committed file.
      failed = (*f)->WriteLogged(0, B("C"));
      staged.push_back(*f);
    }
    EXPECT_LE(OpenDescriptors() - before, budget + 1);
    read = ReadEach(staged);
  }
  ASSERT_TRUE(failed.ok()) << failed.ToString();
  ASSERT_EQ(read.size(), files);
  for (size_t i = 0; i < files; ++i)
    ASSERT_EQ(read[i], "Committed " + std::to_string(i)) << i;
  // Charged as held: the most kept open at once.
  EXPECT_EQ(charged_, TxStaging::kCommittedOpen);
}

// Each transaction keeps up to kCommittedOpen, but several together may meet the daemon's
// limit first: one that gets EMFILE gives up the older half of its own and tries again.
// Before, two transactions of 600 files under a limit of some 700 free descriptors both failed.
TEST_F(CommittedDescriptorsTest, TransactionsTogetherPastTheLimitGiveWay) {
  auto other = TxStaging::Create(tmp_.path() + "/staging", Guid::Random());
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  constexpr size_t kFiles = 600;
  std::vector<StagedFile*> staged;
  Status failed = Status::Ok();
  std::vector<std::string> read;
  {
    LowFileLimit low(700);  // less than twice kCommittedOpen
    ASSERT_TRUE(low.ok()) << "the test needs a higher file limit to start with";
    for (size_t i = 0; i < kFiles && failed.ok(); ++i) {
      for (TxStaging* st : {staging_.get(), other->get()}) {
        const std::string name = (st == staging_.get() ? "a" : "b") + std::to_string(i);
        auto f = Stage(name, "committed " + name, st);
        failed = f.ok() ? (*f)->WriteLogged(0, B("C")) : f.status();
        if (!failed.ok()) break;
        staged.push_back(*f);
      }
    }
    read = ReadEach(staged);
  }
  ASSERT_TRUE(failed.ok()) << failed.ToString() << " after " << staged.size() << " files";
  for (size_t i = 0; i < read.size(); ++i) {
    const std::string name = (i % 2 == 0 ? "a" : "b") + std::to_string(i / 2);
    ASSERT_EQ(read[i], "Committed " + name) << i;
  }
  other->reset();
}

// A committed file closed for others is opened again by its handle, which names the object,
// not its number: once removed behind the mount, it reads as an error that says so, never as
// whatever file took its number; and a lookup by number can tell the two apart.
TEST_F(CommittedDescriptorsTest, ACommittedFileRemovedOutsideIsNotReadAsAnother) {
  auto first = Stage("first", "first committed");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto first_handle = [&] {
    int fd = ::open((tmp_.path() + "/first").c_str(), O_RDONLY | O_CLOEXEC);
    auto h = ObjectHandle::Of(fd);
    ::close(fd);
    return h;
  }();
  ASSERT_TRUE(first_handle);
  EXPECT_TRUE((*first)->StagesObject(first_handle));
  for (size_t i = 0; i < TxStaging::kCommittedOpen; ++i)
    ASSERT_TRUE(Stage("other" + std::to_string(i), "x").ok());
  ASSERT_EQ(::unlink((tmp_.path() + "/first").c_str()), 0);
  auto read = ReadAll(*first);
  ASSERT_FALSE(read.ok()) << "read " << *read;
  EXPECT_EQ(read.status().code(), ESTALE) << read.status().ToString();
  EXPECT_NE(read.status().ToString().find("removed outside the mount"), std::string::npos)
      << read.status().ToString();
  // Another object's handle, whatever its number.
  const std::string next = tmp_.path() + "/next";
  WriteFile(next, "next");
  int fd = ::open(next.c_str(), O_RDONLY | O_CLOEXEC);
  auto next_handle = ObjectHandle::Of(fd);
  ::close(fd);
  ASSERT_TRUE(next_handle);
  EXPECT_FALSE((*first)->StagesObject(next_handle));
}

}  // namespace
}  // namespace ktmfs::fstx

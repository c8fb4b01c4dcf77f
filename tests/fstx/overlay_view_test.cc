// The overlay fed a transaction's ops must show exactly the tree the same changes produce when
// made directly (the reference built by Workload): names, types, modes, sizes, symlink targets
// and xattrs, read through the overlay and the untouched backing directory only.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "fs/tx/overlay.h"
#include "tests/fstx/temp_dir.h"
#include "tests/fstx/workload.h"

namespace ktmfs::fstx {
namespace {

void BuildTree(const std::string& root) {
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
  WriteFile(root + "/a.txt", "alpha");
  WriteFile(root + "/b.txt", "bravo");
  ::mkdir((root + "/dir1").c_str(), 0755);
  WriteFile(root + "/dir1/c.txt", "charlie");
  ::mkdir((root + "/dir1/sub").c_str(), 0750);
  WriteFile(root + "/dir1/sub/d.txt", "delta");
  ::mkdir((root + "/empty").c_str(), 0700);
  WriteFile(root + "/big.bin", std::string(5000, 'x'));
  ::setxattr((root + "/b.txt").c_str(), "user.old", "1", 1, 0);
  ::symlink("a.txt", (root + "/sl").c_str());
}

std::vector<std::string> XattrNames(const std::string& path) {
  char buf[4096];
  ssize_t n = ::llistxattr(path.c_str(), buf, sizeof buf);
  std::vector<std::string> out;
  for (ssize_t i = 0; i < n;) {
    std::string name(buf + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (name.rfind("user.", 0) == 0) out.push_back(name);
  }
  return out;
}

std::string XattrValue(const std::string& path, const std::string& name) {
  char buf[4096];
  ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  return n >= 0 ? std::string(buf, static_cast<size_t>(n)) : "<missing>";
}

std::string Describe(uint32_t mode, uint64_t size, const std::string& target,
                     std::map<std::string, std::string> xattrs) {
  std::ostringstream d;
  if (S_ISDIR(mode)) {
    d << "dir " << std::oct << (mode & 07777);
  } else if (S_ISLNK(mode)) {
    d << "symlink " << target;
  } else if (S_ISREG(mode)) {
    d << "file " << std::oct << (mode & 07777) << std::dec << " size " << size;
  } else {
    d << "node " << std::oct << mode;
  }
  for (const auto& [k, v] : xattrs)
    d << " " << k << "=" << v;
  return d.str();
}

void ReferenceInto(const std::string& root, const std::string& rel,
                   std::map<std::string, std::string>* out) {
  auto names = ListNames(rel.empty() ? root : root + "/" + rel);
  ASSERT_TRUE(names.has_value()) << rel;
  for (const auto& n : *names) {
    std::string r = rel.empty() ? n : rel + "/" + n;
    std::string p = root + "/" + r;
    struct stat st;
    ASSERT_EQ(::lstat(p.c_str(), &st), 0);
    char target[4096];
    ssize_t len = S_ISLNK(st.st_mode) ? ::readlink(p.c_str(), target, sizeof target) : 0;
    std::map<std::string, std::string> x;
    for (const auto& name : XattrNames(p))
      x[name] = XattrValue(p, name);
    (*out)[r] = Describe(st.st_mode, static_cast<uint64_t>(st.st_size),
                         std::string(target, len > 0 ? static_cast<size_t>(len) : 0), x);
    if (S_ISDIR(st.st_mode)) ReferenceInto(root, r, out);
  }
}

// The tree as the transaction's own requests would see it.
class ViewReader {
 public:
  ViewReader(const TxOverlay& ov, std::string backing, std::string staging)
      : ov_(ov), backing_(std::move(backing)), staging_(std::move(staging)) {}

  void Into(const std::string& rel, std::map<std::string, std::string>* out) {
    auto bd = ov_.BackingDir(rel);
    ASSERT_TRUE(bd.ok()) << bd.status().ToString();
    std::vector<std::string> backing_names;
    if (bd->has_value()) {
      std::string dir = bd->value().empty() ? backing_ : backing_ + "/" + bd->value();
      auto names = ListNames(dir);
      ASSERT_TRUE(names.has_value()) << dir;
      backing_names = std::move(*names);
    }
    auto entries = ov_.ReadDir(rel, backing_names);
    ASSERT_TRUE(entries.ok()) << entries.status().ToString();
    for (const OverlayDirEntry& e : *entries) {
      std::string r = rel.empty() ? e.name : rel + "/" + e.name;
      uint32_t mode = 0;
      (*out)[r] = DescribeEntry(e.entry, &mode);
      if (S_ISDIR(mode)) Into(r, out);
    }
  }

 private:
  std::string DescribeEntry(const OverlayLookup& l, uint32_t* mode) {
    ObjectId id = l.object;
    uint64_t size = 0;
    std::string target;
    std::vector<std::string> backing_xattrs;
    std::string backing_path;
    if (l.kind == OverlayLookup::Kind::kEntry && id.kind == ObjectId::Kind::kNew) {
      *mode = l.type;
      struct stat st;
      if (::lstat((staging_ + "/" + StagedNameForNew(id.number)).c_str(), &st) == 0 &&
          S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
      }
      target = ov_.Readlink(id).value_or("");
    } else {
      backing_path = backing_ + "/" + l.backing_path;
      struct stat st;
      EXPECT_EQ(::lstat(backing_path.c_str(), &st), 0) << backing_path;
      id = ObjectId::Existing(st.st_dev, st.st_ino);
      *mode = st.st_mode;
      size = static_cast<uint64_t>(st.st_size);
      char buf[4096];
      ssize_t len = S_ISLNK(st.st_mode) ? ::readlink(backing_path.c_str(), buf, sizeof buf) : 0;
      target.assign(buf, len > 0 ? static_cast<size_t>(len) : 0);
      backing_xattrs = XattrNames(backing_path);
    }
    if (auto a = ov_.Attributes(id)) {
      if (a->mode) *mode = (*mode & S_IFMT) | (*a->mode & 07777);
      size = a->Size(size);
    }
    std::map<std::string, std::string> x;
    for (const auto& name : ov_.Xattrs(id, backing_xattrs)) {
      XattrLookup v = ov_.GetXattr(id, name);
      x[name] = v.kind == XattrLookup::Kind::kValue ? v.value : XattrValue(backing_path, name);
    }
    return Describe(*mode, size, target, x);
  }

  const TxOverlay& ov_;
  std::string backing_, staging_;
};

void ExpectViewMatchesReference(const std::function<void(Workload&)>& fn) {
  TempDir tmp;
  std::string backing = tmp.path() + "/backing", ref = tmp.path() + "/reference";
  BuildTree(backing);
  BuildTree(ref);
  std::map<std::string, std::string> before;
  ReferenceInto(backing, "", &before);
  auto staging = TxStaging::Create(tmp.path() + "/staging/rm", Guid::Random());
  ASSERT_TRUE(staging.ok()) << staging.status().ToString();
  Workload w(backing, ref, staging->get());
  fn(w);
  TxOverlay ov(backing);
  for (const Op& op : w.ops()) {
    Status s = ov.Apply(op);
    ASSERT_TRUE(s.ok()) << OpKindName(op.kind) << " " << op.path << ": " << s.ToString();
  }
  std::map<std::string, std::string> want, got, after;
  ReferenceInto(ref, "", &want);
  ViewReader(ov, backing, (*staging)->dir()).Into("", &got);
  EXPECT_EQ(got, want);
  ReferenceInto(backing, "", &after);
  EXPECT_EQ(after, before) << "the backing directory must not change";
}

TEST(OverlayView, EveryKindOfChangeMatchesTheReference) {
  ExpectViewMatchesReference([](Workload& w) {
    w.Create("new.txt", "fresh file");
    w.Write("new.txt", 20, "tail");
    w.Write("big.bin", 4000, std::string(3000, 'Z'));
    w.Truncate("b.txt", 2);
    w.Write("b.txt", 4, "!");
    w.Rename("dir1", "moved");
    w.Rename("moved/c.txt", "c-top.txt");
    w.Mkdir("newdir", 0711);
    w.Rename("a.txt", "newdir/a-inside.txt");
    w.Symlink("newdir/link", "../c-top.txt");
    w.Link("c-top.txt", "moved/sub/c-hard");
    w.Unlink("moved/sub/d.txt");
    w.Rmdir("empty");
    w.Chmod("moved/sub", 0700);
    w.Chmod("new.txt", 0600);
    w.SetXattr("c-top.txt", "user.k", "v1");
    w.SetXattr("newdir", "user.dirattr", "d");
    w.RemoveXattr("b.txt", "user.old");
    w.Rename("sl", "b.txt");
  });
}

TEST(OverlayView, MovesAndReplacementsMatchTheReference) {
  ExpectViewMatchesReference([](Workload& w) {
    w.Unlink("a.txt");
    w.Create("a.txt", "second alpha");
    w.Mkdir("box");
    w.Rename("dir1", "box/dir1");
    w.Create("box/dir1/sub/e.txt", "echo");
    w.Rename("box/dir1/sub", "sub2");
    w.Rename("b.txt", "tmp");
    w.Rename("big.bin", "b.txt");
    w.Rename("tmp", "big.bin");
    w.Truncate("b.txt", 10);
    w.Rename("box/dir1", "dir1");
    w.Rmdir("box");
    w.Rename("empty", "sub2/empty");
    w.Rename("sub2", "dir1/sub");  // dir1/sub was moved away, the name is free
  });
}

TEST(OverlayView, ExchangesMatchTheReference) {
  ExpectViewMatchesReference([](Workload& w) {
    w.Exchange("a.txt", "dir1");
    w.Mknod("fifo", S_IFIFO | 0640);
    w.Create("n1", "one");
    w.Create("n2", "two");
    w.Exchange("n1", "n2");
    w.Link("b.txt", "a.txt/sub/b-link");
    w.Unlink("b.txt");
    w.Rename("fifo", "a.txt/fifo");
    w.Exchange("big.bin", "a.txt/sub/d.txt");
    w.Exchange("a.txt", "empty");
  });
}

}  // namespace
}  // namespace ktmfs::fstx

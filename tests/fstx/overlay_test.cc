#include "fs/tx/overlay.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

using Kind = OverlayLookup::Kind;

// A backing directory with: a/, a/f, a/sub/, a/sub/g, b (file), c/ (empty dir).
class OverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Mkdir("a");
    Touch("a/f");
    Mkdir("a/sub");
    Touch("a/sub/g");
    Touch("b");
    Mkdir("c");
  }
  void Mkdir(const std::string& p) { ASSERT_EQ(::mkdir(Full(p).c_str(), 0755), 0) << p; }
  void Touch(const std::string& p) {
    int fd = ::open(Full(p).c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0) << p;
    ::close(fd);
  }
  std::string Full(const std::string& p) const { return dir_.path() + "/" + p; }
  ObjectId Id(const std::string& p) const {
    struct stat st;
    EXPECT_EQ(::lstat(Full(p).c_str(), &st), 0) << p;
    return ObjectId::Existing(st.st_dev, st.st_ino);
  }
  OverlayLookup Look(const std::string& dir, const std::string& name) {
    auto r = ov_.Lookup(dir, name);
    EXPECT_TRUE(r.ok()) << dir << "/" << name << ": " << r.status().ToString();
    return r.ok() ? *r : OverlayLookup{};
  }
  // The view's names in `dir`, with the backing names read from where the overlay says.
  std::vector<std::string> List(const std::string& dir) {
    auto b = ov_.BackingDir(dir);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    std::vector<std::string> backing;
    if (b.ok() && b->has_value()) {
      // A fixed backing order keeps the expectation exact: sorted names.
      std::string full = dir_.path() + (b->value().empty() ? "" : "/" + b->value());
      std::vector<std::string> names = ListNames(full).value_or(std::vector<std::string>{});
      std::sort(names.begin(), names.end());
      backing = names;
    }
    auto r = ov_.ReadDir(dir, backing);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    std::vector<std::string> out;
    if (r.ok()) {
      for (const auto& e : *r)
        out.push_back(e.name);
    }
    return out;
  }
  void Ok(const Op& op) {
    Status s = ov_.Apply(op);
    EXPECT_TRUE(s.ok()) << OpKindName(op.kind) << " " << op.path << ": " << s.ToString();
  }
  int Err(const Op& op) { return ov_.Apply(op).code(); }

  TempDir dir_;
  TxOverlay ov_{dir_.path()};
};

using Names = std::vector<std::string>;

TEST_F(OverlayTest, UntouchedNamesAreUnchangedAndAskTheBackingPath) {
  OverlayLookup l = Look("a/sub", "g");
  EXPECT_EQ(l.kind, Kind::kUnchanged);
  EXPECT_EQ(l.backing_path, "a/sub/g");
  EXPECT_EQ(List("a"), (Names{"f", "sub"}));
  EXPECT_FALSE(ov_.Attributes(Id("b")).has_value());
}

TEST_F(OverlayTest, NestedCreatesAreVisibleAndListed) {
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(1), .path = "a/n", .mode = 0750});
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(2), .path = "a/n/m", .mode = 0700});
  Ok({.kind = OpKind::kCreate,
      .object = ObjectId::New(3),
      .path = "a/n/m/x",
      .mode = 0640,
      .uid = 7,
      .gid = 8});
  Ok({.kind = OpKind::kSymlink, .object = ObjectId::New(4), .path = "a/n/l", .target = "m/x"});
  Ok({.kind = OpKind::kMknod,
      .object = ObjectId::New(5),
      .path = "a/n/fifo",
      .mode = S_IFIFO | 0600});
  OverlayLookup l = Look("a/n/m", "x");
  EXPECT_EQ(l.kind, Kind::kEntry);
  EXPECT_EQ(l.object, ObjectId::New(3));
  EXPECT_EQ(l.type, static_cast<uint32_t>(S_IFREG));
  EXPECT_EQ(Look("a/n", "m").type, static_cast<uint32_t>(S_IFDIR));
  EXPECT_EQ(Look("a/n", "fifo").type, static_cast<uint32_t>(S_IFIFO));
  // A new directory has only its own entries.
  EXPECT_EQ(Look("a/n", "other").kind, Kind::kRemoved);
  auto bd = ov_.BackingDir("a/n");
  ASSERT_TRUE(bd.ok());
  EXPECT_FALSE(bd->has_value());
  EXPECT_EQ(List("a/n"), (Names{"fifo", "l", "m"}));
  EXPECT_EQ(List("a"), (Names{"f", "sub", "n"}));
  auto attrs = ov_.Attributes(ObjectId::New(3));
  ASSERT_TRUE(attrs.has_value());
  EXPECT_EQ(*attrs->mode, static_cast<uint32_t>(S_IFREG | 0640));
  EXPECT_EQ(*attrs->uid, 7u);
  EXPECT_EQ(*attrs->gid, 8u);
  EXPECT_EQ(attrs->Size(0), 0u);
  EXPECT_EQ(ov_.Readlink(ObjectId::New(4)), std::optional<std::string>("m/x"));
  EXPECT_EQ(ov_.Readlink(ObjectId::New(3)), std::nullopt);
  // Creating over a name the view holds, or under a missing directory, fails.
  EXPECT_EQ(Err({.kind = OpKind::kCreate, .object = ObjectId::New(6), .path = "a/n/m"}), EEXIST);
  EXPECT_EQ(Err({.kind = OpKind::kCreate, .object = ObjectId::New(6), .path = "a/n/zz/q"}), ENOENT);
  EXPECT_EQ(Err({.kind = OpKind::kCreate, .object = ObjectId::New(6), .path = "a/n/l/q"}), ENOTDIR);
}

// A committed directory named by identity (the daemon knows its backing path) is found where the
// view has it: moved with its ancestors, gone with them, or hidden behind a replacement.
TEST_F(OverlayTest, ViewPathFollowsRenamesOfTheDirectoryAndItsAncestors) {
  auto view = [&](const std::string& backing) {
    auto r = ov_.ViewPath(backing);
    return r.ok() ? *r : "error " + std::to_string(r.status().code());
  };
  EXPECT_EQ(view(""), "");
  EXPECT_EQ(view("a/sub"), "a/sub");
  Ok({.kind = OpKind::kRename, .object = Id("a"), .path = "a", .path2 = "c/moved"});
  EXPECT_EQ(view("a"), "c/moved");
  EXPECT_EQ(view("a/sub"), "c/moved/sub");
  EXPECT_EQ(view("c"), "c");
  Ok({.kind = OpKind::kRename, .object = Id("a/sub"), .path = "c/moved/sub", .path2 = "s2"});
  EXPECT_EQ(view("a/sub"), "s2");
  EXPECT_EQ(view("a"), "c/moved");
  // A new object under the old name does not make the old directory visible there.
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(1), .path = "a", .mode = 0755});
  EXPECT_EQ(view("a"), "c/moved");
  Ok({.kind = OpKind::kUnlink, .object = Id("a/f"), .path = "c/moved/f"});
  Ok({.kind = OpKind::kRmdir, .object = Id("a"), .path = "c/moved"});
  EXPECT_EQ(view("a"), "error " + std::to_string(ENOENT));
  EXPECT_EQ(view("a/sub"), "s2");
}

TEST_F(OverlayTest, UnlinkOfABackingFileHidesItAndCreateReusesTheName) {
  Ok({.kind = OpKind::kUnlink, .object = Id("a/f"), .path = "a/f"});
  EXPECT_EQ(Look("a", "f").kind, Kind::kRemoved);
  EXPECT_EQ(List("a"), (Names{"sub"}));
  EXPECT_EQ(Err({.kind = OpKind::kUnlink, .object = Id("a/f"), .path = "a/f"}), ENOENT);
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "a/f"});
  EXPECT_EQ(Look("a", "f").object, ObjectId::New(1));
  // Removing the new file again must still hide the backing one.
  Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(1), .path = "a/f"});
  EXPECT_EQ(Look("a", "f").kind, Kind::kRemoved);
  EXPECT_EQ(List("a"), (Names{"sub"}));
}

TEST_F(OverlayTest, UnlinkOfACreatedFileRemovesItEntirely) {
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "t"});
  Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(1), .path = "t"});
  // Not a tombstone: the name is the backing directory's business again.
  EXPECT_EQ(Look("", "t").kind, Kind::kUnchanged);
  EXPECT_EQ(List(""), (Names{"a", "b", "c"}));
}

TEST_F(OverlayTest, RmdirChecksWhatTheViewKnows) {
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(1), .path = "d"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(2), .path = "d/x"});
  EXPECT_EQ(Err({.kind = OpKind::kRmdir, .object = ObjectId::New(1), .path = "d"}), ENOTEMPTY);
  EXPECT_EQ(Err({.kind = OpKind::kUnlink, .object = ObjectId::New(1), .path = "d"}), EISDIR);
  EXPECT_EQ(Err({.kind = OpKind::kRmdir, .object = Id("b"), .path = "b"}), ENOTDIR);
  Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(2), .path = "d/x"});
  Ok({.kind = OpKind::kRmdir, .object = ObjectId::New(1), .path = "d"});
  // Created and removed again: the name is the backing directory's business, below it too.
  EXPECT_EQ(Look("", "d").kind, Kind::kUnchanged);
  EXPECT_EQ(Look("d", "x").kind, Kind::kUnchanged);
  EXPECT_EQ(List(""), (Names{"a", "b", "c"}));
  // A backing directory emptied in the view can go; the caller checked the backing names.
  Ok({.kind = OpKind::kUnlink, .object = Id("a/sub/g"), .path = "a/sub/g"});
  Ok({.kind = OpKind::kRmdir, .object = Id("a/sub"), .path = "a/sub"});
  EXPECT_EQ(Look("a", "sub").kind, Kind::kRemoved);
  EXPECT_EQ(ov_.Lookup("a/sub", "g").status().code(), ENOENT);
}

TEST_F(OverlayTest, RenamedDirectoryIsFoundUnderTheNewPathOnly) {
  ObjectId a = Id("a");
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "a/sub/new"});
  Ok({.kind = OpKind::kRename, .object = a, .path = "a", .path2 = "c/moved"});
  OverlayLookup l = Look("c", "moved");
  EXPECT_EQ(l.kind, Kind::kEntry);
  EXPECT_EQ(l.object, a);
  EXPECT_EQ(l.type, static_cast<uint32_t>(S_IFDIR));
  EXPECT_EQ(l.backing_path, "a");
  // Below the new path: the backing entries at the old path, and the tx's own changes.
  l = Look("c/moved/sub", "g");
  EXPECT_EQ(l.kind, Kind::kUnchanged);
  EXPECT_EQ(l.backing_path, "a/sub/g");
  EXPECT_EQ(Look("c/moved/sub", "new").object, ObjectId::New(1));
  EXPECT_EQ(List("c/moved"), (Names{"f", "sub"}));
  EXPECT_EQ(List("c/moved/sub"), (Names{"g", "new"}));
  EXPECT_EQ(List("c"), (Names{"moved"}));
  // Below the old path: nothing.
  EXPECT_EQ(Look("", "a").kind, Kind::kRemoved);
  EXPECT_EQ(ov_.Lookup("a", "f").status().code(), ENOENT);
  EXPECT_EQ(ov_.Lookup("a/sub", "g").status().code(), ENOENT);
  EXPECT_EQ(List(""), (Names{"b", "c"}));
  // Changes made at the new path land there; a new "a" is a fresh empty directory.
  Ok({.kind = OpKind::kUnlink, .object = Id("a/f"), .path = "c/moved/f"});
  EXPECT_EQ(List("c/moved"), (Names{"sub"}));
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(2), .path = "a"});
  EXPECT_EQ(Look("a", "f").kind, Kind::kRemoved);
  EXPECT_EQ(List("a"), Names{});
  // And back again over it fails with NOREPLACE, works into a free name.
  EXPECT_EQ(Err({.kind = OpKind::kRename,
                 .object = a,
                 .path = "c/moved",
                 .path2 = "a",
                 .replaced = ObjectId::New(2),
                 .flags = RENAME_NOREPLACE}),
            EEXIST);
  EXPECT_EQ(Err({.kind = OpKind::kRename, .object = a, .path = "c/moved", .path2 = "c/moved/x"}),
            EINVAL);
  Ok({.kind = OpKind::kRename, .object = a, .path = "c/moved", .path2 = "back"});
  EXPECT_EQ(Look("back/sub", "g").backing_path, "a/sub/g");
  // "c/moved" was a free name before: the view no longer has anything there.
  EXPECT_EQ(Look("c/moved", "sub").backing_path, "c/moved/sub");
  EXPECT_EQ(List("c"), Names{});
}

TEST_F(OverlayTest, RenameOverAnExistingFileReplacesIt) {
  ObjectId f = Id("a/f");
  EXPECT_EQ(Err({.kind = OpKind::kRename,
                 .object = f,
                 .path = "a/f",
                 .path2 = "b",
                 .replaced = Id("b"),
                 .flags = RENAME_NOREPLACE}),
            EEXIST);
  EXPECT_EQ(
      Err({.kind = OpKind::kRename, .object = f, .path = "a/f", .path2 = "c", .replaced = Id("c")}),
      EISDIR);
  Ok({.kind = OpKind::kRename, .object = f, .path = "a/f", .path2 = "b", .replaced = Id("b")});
  OverlayLookup l = Look("", "b");
  EXPECT_EQ(l.kind, Kind::kEntry);
  EXPECT_EQ(l.object, f);
  EXPECT_EQ(l.backing_path, "a/f");
  EXPECT_EQ(Look("a", "f").kind, Kind::kRemoved);
  EXPECT_EQ(List(""), (Names{"a", "b", "c"}));
  EXPECT_EQ(List("a"), (Names{"sub"}));
  // Moving it away again leaves a tombstone over the backing "b".
  Ok({.kind = OpKind::kRename, .object = f, .path = "b", .path2 = "c/f"});
  EXPECT_EQ(Look("", "b").kind, Kind::kRemoved);
  EXPECT_EQ(List(""), (Names{"a", "c"}));
  EXPECT_EQ(List("c"), (Names{"f"}));
}

TEST_F(OverlayTest, ExchangeSwapsAFileAndADirectory) {
  ObjectId b = Id("b");
  ObjectId a = Id("a");
  EXPECT_EQ(Err({.kind = OpKind::kRename,
                 .object = b,
                 .path = "b",
                 .path2 = "zz",
                 .flags = RENAME_EXCHANGE}),
            ENOENT);
  Ok({.kind = OpKind::kRename,
      .object = b,
      .path = "b",
      .path2 = "a",
      .replaced = a,
      .flags = RENAME_EXCHANGE});
  EXPECT_EQ(Look("", "a").object, b);
  EXPECT_EQ(Look("", "a").type, static_cast<uint32_t>(S_IFREG));
  EXPECT_EQ(Look("", "b").object, a);
  EXPECT_EQ(Look("b", "f").backing_path, "a/f");
  EXPECT_EQ(ov_.Lookup("a", "f").status().code(), ENOTDIR);
  EXPECT_EQ(List(""), (Names{"a", "b", "c"}));
  EXPECT_EQ(List("b"), (Names{"f", "sub"}));
}

TEST_F(OverlayTest, LinkAddsANameForTheSameObject) {
  ObjectId f = Id("a/f");
  Ok({.kind = OpKind::kLink, .object = f, .path = "a/f", .path2 = "c/l"});
  EXPECT_EQ(Look("c", "l").object, f);
  EXPECT_EQ(Look("c", "l").backing_path, "a/f");
  EXPECT_EQ(Look("a", "f").kind, Kind::kUnchanged);
  EXPECT_EQ(Err({.kind = OpKind::kLink, .object = f, .path = "a/f", .path2 = "c/l"}), EEXIST);
  EXPECT_EQ(Err({.kind = OpKind::kLink, .object = Id("c"), .path = "c", .path2 = "c2"}), EPERM);
  Ok({.kind = OpKind::kUnlink, .object = f, .path = "c/l"});
  EXPECT_EQ(List("c"), Names{});
}

TEST_F(OverlayTest, SetattrAndWriteExtentsKeepWhatWasSet) {
  ObjectId b = Id("b");
  Ok({.kind = OpKind::kSetattr,
      .object = b,
      .path = "b",
      .mode = 0600,
      .uid = 5,
      .set_mask = kSetMode | kSetUid | kSetAtime | kSetMtime,
      .atime_ns = 11,
      .mtime_ns = 22});
  auto a = ov_.Attributes(b);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a->mode, 0600u);
  EXPECT_EQ(*a->uid, 5u);
  EXPECT_FALSE(a->gid.has_value());
  EXPECT_EQ(*a->atime_ns, 11);
  EXPECT_EQ(*a->mtime_ns, 22);
  EXPECT_FALSE(a->size.has_value());
  // A write past the end grows the backing size; a truncate is absolute.
  Ok({.kind = OpKind::kWriteExtent, .object = b, .path = "b", .offset = 100, .length = 50});
  EXPECT_EQ(ov_.Attributes(b)->Size(10), 150u);
  EXPECT_EQ(ov_.Attributes(b)->Size(1000), 1000u);
  Ok({.kind = OpKind::kSetattr, .object = b, .path = "b", .set_mask = kSetSize, .size = 20});
  EXPECT_EQ(ov_.Attributes(b)->Size(1000), 20u);
  Ok({.kind = OpKind::kWriteExtent, .object = b, .path = "b", .offset = 0, .length = 30});
  EXPECT_EQ(ov_.Attributes(b)->Size(1000), 30u);
  // A new file's mode keeps its type.
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "n", .mode = 0644});
  Ok({.kind = OpKind::kSetattr,
      .object = ObjectId::New(1),
      .path = "n",
      .mode = 0400,
      .set_mask = kSetMode});
  EXPECT_EQ(*ov_.Attributes(ObjectId::New(1))->mode, static_cast<uint32_t>(S_IFREG | 0400));
}

TEST_F(OverlayTest, XattrsMergeOverTheBackingList) {
  ObjectId b = Id("b");
  Ok({.kind = OpKind::kSetxattr, .object = b, .path = "b", .name = "user.new", .value = "v1"});
  Ok({.kind = OpKind::kRemovexattr, .object = b, .path = "b", .name = "user.old"});
  EXPECT_EQ(ov_.Xattrs(b, {"user.old", "user.keep"}), (Names{"user.keep", "user.new"}));
  XattrLookup x = ov_.GetXattr(b, "user.new");
  EXPECT_EQ(x.kind, XattrLookup::Kind::kValue);
  EXPECT_EQ(x.value, "v1");
  EXPECT_EQ(ov_.GetXattr(b, "user.old").kind, XattrLookup::Kind::kRemoved);
  EXPECT_EQ(ov_.GetXattr(b, "user.keep").kind, XattrLookup::Kind::kUnchanged);
  EXPECT_EQ(Err({
                .kind = OpKind::kSetxattr,
                .object = b,
                .flags = XATTR_CREATE,
                .name = "user.new",
                .value = "v2",
            }),
            EEXIST);
  EXPECT_EQ(Err({
                .kind = OpKind::kSetxattr,
                .object = b,
                .flags = XATTR_REPLACE,
                .name = "user.old",
                .value = "v2",
            }),
            ENODATA);
  EXPECT_EQ(Err({.kind = OpKind::kRemovexattr, .object = b, .name = "user.old"}), ENODATA);
  Ok({.kind = OpKind::kSetxattr, .object = b, .name = "user.old", .value = "back"});
  EXPECT_EQ(ov_.GetXattr(b, "user.old").value, "back");
  EXPECT_EQ(ov_.Xattrs(b, {"user.old"}), (Names{"user.old", "user.new"}));
  // A new object has no backing xattrs.
  ObjectId n = ObjectId::New(1);
  EXPECT_EQ(ov_.GetXattr(n, "user.x").kind, XattrLookup::Kind::kRemoved);
  EXPECT_EQ(Err({.kind = OpKind::kRemovexattr, .object = n, .name = "user.x"}), ENODATA);
  Ok({.kind = OpKind::kSetxattr, .object = n, .name = "user.x", .value = "1"});
  Ok({.kind = OpKind::kRemovexattr, .object = n, .name = "user.x"});
  EXPECT_EQ(ov_.Xattrs(n, {}), Names{});
}

TEST_F(OverlayTest, ReadDirKeepsBackingOrderAndAppendsAdditionsByName) {
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "zeta"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(2), .path = "alpha"});
  Ok({.kind = OpKind::kUnlink, .object = Id("b"), .path = "b"});
  auto r = ov_.ReadDir("", {"c", "b", "a"});
  ASSERT_TRUE(r.ok());
  Names names;
  for (const auto& e : *r)
    names.push_back(e.name);
  EXPECT_EQ(names, (Names{"c", "a", "alpha", "zeta"}));
  EXPECT_EQ((*r)[0].entry.kind, Kind::kUnchanged);
  EXPECT_EQ((*r)[0].entry.backing_path, "c");
  EXPECT_EQ((*r)[2].entry.object, ObjectId::New(2));
  EXPECT_EQ(ov_.ReadDir("b", {}).status().code(), ENOENT);
}

TEST_F(OverlayTest, FailedOpsLeaveTheViewUnchanged) {
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(1), .path = "d"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(2), .path = "d/x"});
  Ok({.kind = OpKind::kMkdir, .object = ObjectId::New(3), .path = "e"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(4), .path = "e/y"});
  EXPECT_EQ(Err({.kind = OpKind::kRename,
                 .object = ObjectId::New(1),
                 .path = "d",
                 .path2 = "e",
                 .replaced = ObjectId::New(3)}),
            ENOTEMPTY);
  EXPECT_EQ(List("d"), (Names{"x"}));
  EXPECT_EQ(List("e"), (Names{"y"}));
  // Over an empty directory it works, and the target's subtree is gone.
  Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(4), .path = "e/y"});
  Ok({.kind = OpKind::kRename,
      .object = ObjectId::New(1),
      .path = "d",
      .path2 = "e",
      .replaced = ObjectId::New(3)});
  EXPECT_EQ(List("e"), (Names{"x"}));
  EXPECT_EQ(Look("", "d").kind, Kind::kUnchanged);
  EXPECT_EQ(List(""), (Names{"a", "b", "c", "e"}));
}

TEST_F(OverlayTest, ExchangeOfTwoDirectoriesSwapsTheirSubtrees) {
  ObjectId a = Id("a");
  ObjectId c = Id("c");
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "c/inc"});
  Ok({.kind = OpKind::kRename,
      .object = a,
      .path = "a",
      .path2 = "c",
      .replaced = c,
      .flags = RENAME_EXCHANGE});
  EXPECT_EQ(Look("", "c").object, a);
  EXPECT_EQ(Look("", "a").object, c);
  EXPECT_EQ(List("c"), (Names{"f", "sub"}));
  EXPECT_EQ(List("a"), (Names{"inc"}));
  EXPECT_EQ(Look("c/sub", "g").backing_path, "a/sub/g");
  EXPECT_EQ(Look("a", "inc").object, ObjectId::New(1));
  EXPECT_EQ(List(""), (Names{"a", "b", "c"}));
}

TEST_F(OverlayTest, NestedMovesFollowEachDirectoryToItsBackingPath) {
  ObjectId a = Id("a");
  ObjectId sub = Id("a/sub");
  Ok({.kind = OpKind::kRename, .object = a, .path = "a", .path2 = "x"});
  Ok({.kind = OpKind::kRename, .object = sub, .path = "x/sub", .path2 = "c/s2"});
  Ok({.kind = OpKind::kRename, .object = a, .path = "x", .path2 = "c/s2/top"});
  EXPECT_EQ(Look("c/s2", "g").backing_path, "a/sub/g");
  EXPECT_EQ(Look("c/s2/top", "f").backing_path, "a/f");
  EXPECT_EQ(Look("c/s2/top", "sub").kind, Kind::kRemoved);
  EXPECT_EQ(List("c/s2"), (Names{"g", "top"}));
  EXPECT_EQ(List("c/s2/top"), (Names{"f"}));
  EXPECT_EQ(List(""), (Names{"b", "c"}));
  // A file moved out of a moved directory and back keeps its backing path.
  ObjectId g = Id("a/sub/g");
  Ok({.kind = OpKind::kRename, .object = g, .path = "c/s2/g", .path2 = "g2"});
  EXPECT_EQ(Look("", "g2").backing_path, "a/sub/g");
  Ok({.kind = OpKind::kRename, .object = g, .path = "g2", .path2 = "c/s2/top/g"});
  EXPECT_EQ(Look("c/s2/top", "g").backing_path, "a/sub/g");
  EXPECT_EQ(List("c/s2"), (Names{"top"}));
  EXPECT_EQ(List(""), (Names{"b", "c"}));
}

TEST_F(OverlayTest, RenameOverAnEmptyBackingDirectoryHidesItsPath) {
  ObjectId sub = Id("a/sub");
  Ok({.kind = OpKind::kUnlink, .object = Id("a/sub/g"), .path = "a/sub/g"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "c/tmp"});
  Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(1), .path = "c/tmp"});
  Ok({.kind = OpKind::kRename, .object = Id("c"), .path = "c", .path2 = "a/sub", .replaced = sub});
  EXPECT_EQ(Look("a", "sub").object, Id("c"));
  EXPECT_EQ(Look("a/sub", "g").backing_path, "c/g");
  EXPECT_EQ(List("a/sub"), Names{});
  EXPECT_EQ(List(""), (Names{"a", "b"}));
}

TEST_F(OverlayTest, ReportsWhatCommitMustInvalidate) {
  EXPECT_TRUE(ov_.TouchedObjects().empty());
  EXPECT_TRUE(ov_.ChangedBackingEntries().empty());
  ObjectId a = Id("a"), b = Id("b"), g = Id("a/sub/g");
  Ok({.kind = OpKind::kRename, .object = a, .path = "a", .path2 = "c/a2"});
  Ok({.kind = OpKind::kUnlink, .object = g, .path = "c/a2/sub/g"});
  Ok({.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "c/a2/n"});
  Ok({.kind = OpKind::kSetattr, .object = b, .path = "b", .mode = 0600, .set_mask = kSetMode});
  Ok({.kind = OpKind::kRename,
      .object = Id("a/f"),
      .path = "c/a2/f",
      .path2 = "c/a2/n",
      .replaced = ObjectId::New(1)});
  // The unlinked and the replaced objects too: their link counts changed.
  std::vector<ObjectId> want = {a, b, g, Id("a/f"), ObjectId::New(1)};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ov_.TouchedObjects(), want);
  using Entries = std::vector<std::pair<std::string, std::string>>;
  // Named by backing paths: the moved directory's entries are still under "a" there.
  EXPECT_EQ(ov_.ChangedBackingEntries(),
            (Entries{{"", "a"}, {"a", "f"}, {"a", "n"}, {"a/sub", "g"}, {"c", "a2"}}));
}

TEST_F(OverlayTest, StampsTimesAndLinksTheOpsDoNotCarry) {
  const ObjectId f = Id("a/f"), a = Id("a");
  EXPECT_FALSE(ov_.Stamps(f).has_value());
  // Ops alone leave no stamps: the operations stamp what the view shows as they make a change.
  Ok({.kind = OpKind::kLink, .object = f, .path = "a/f", .path2 = "c/f2"});
  EXPECT_FALSE(ov_.Stamps(f).has_value());

  ov_.Touch(f, {100, 1}, false);
  ov_.AddLinks(f, 1);
  auto t = ov_.Stamps(f);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->ctime->tv_sec, 100);
  EXPECT_FALSE(t->mtime.has_value());  // a status change only
  EXPECT_EQ(t->nlink_delta, 1);

  // A change to data or entries moves both times; a later explicit mtime wins over it, and a
  // later change over that.
  ov_.Touch(a, {200, 0}, true);
  ov_.SetMtime(a, {50, 0});
  EXPECT_EQ(ov_.Stamps(a)->mtime->tv_sec, 50);
  EXPECT_EQ(ov_.Stamps(a)->ctime->tv_sec, 200);
  ov_.Touch(a, {300, 0}, true);
  EXPECT_EQ(ov_.Stamps(a)->mtime->tv_sec, 300);

  // Link changes add up; an unlink and a removed directory count down.
  ov_.AddLinks(a, 1);
  ov_.AddLinks(a, -2);
  EXPECT_EQ(ov_.Stamps(a)->nlink_delta, -1);
  // Stamps are the view's only: they mark nothing for commit to invalidate.
  EXPECT_EQ(ov_.TouchedObjects(), (std::vector<ObjectId>{f}));
}

TEST_F(OverlayTest, ConcurrentReadersSeeWholeOps) {
  // Readers run while a writer applies create/unlink pairs: each lookup sees the name either
  // present or absent, never a half-applied state (and ASan/UBSan check the locking).
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!done.load()) {
      auto r = ov_.Lookup("a/sub", "t");
      if (!r.ok() || (r->kind == Kind::kEntry && r->type != S_IFREG)) bad++;
      auto l = ov_.ReadDir("a/sub", {"g"});
      if (!l.ok() || l->empty() || l->front().name != "g") bad++;
    }
  });
  for (uint64_t i = 1; i <= 200; ++i) {
    Ok({.kind = OpKind::kCreate, .object = ObjectId::New(i), .path = "a/sub/t"});
    Ok({.kind = OpKind::kUnlink, .object = ObjectId::New(i), .path = "a/sub/t"});
  }
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace ktmfs::fstx

// Builds a transaction the way the filesystem RM will: each change is staged and logged as an
// op against the backing tree (left untouched), and made directly on a reference copy of the
// tree, which is then what the backing tree must look like after apply.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fs/tx/apply_plan.h"
#include "fs/tx/records.h"
#include "fs/tx/staging.h"
#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {

class Workload {
 public:
  // Both trees must have been built identically; objects are matched by path once, here.
  Workload(std::string backing, std::string reference, TxStaging* staging)
      : backing_(std::move(backing)), ref_(std::move(reference)), staging_(staging) {
    MapTree("");
  }

  void Create(const std::string& p, const std::string& data, mode_t mode = 0644) {
    uint64_t n = ++next_;
    int fd = ::open((ref_ + "/" + p).c_str(), O_CREAT | O_EXCL | O_WRONLY, mode);
    ASSERT_GE(fd, 0) << p;
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ::fchmod(fd, mode);
    Bind(fd, ObjectId::New(n));
    ::close(fd);
    auto f = staging_->NewFile(StagedNameForNew(n));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->Write(0, Bytes(data)).ok());
    ops_.push_back({.kind = OpKind::kCreate,
                    .object = ObjectId::New(n),
                    .path = p,
                    .mode = mode,
                    .uid = ::getuid(),
                    .gid = ::getgid(),
                    .staged_file = StagedNameForNew(n)});
  }
  void Mkdir(const std::string& p, mode_t mode = 0755) {
    uint64_t n = ++next_;
    ASSERT_EQ(::mkdir((ref_ + "/" + p).c_str(), mode), 0) << p;
    ::chmod((ref_ + "/" + p).c_str(), mode);
    BindPath(p, ObjectId::New(n));
    ASSERT_TRUE(staging_->NewDirectory(StagedNameForNew(n), mode).ok());
    ops_.push_back({.kind = OpKind::kMkdir,
                    .object = ObjectId::New(n),
                    .path = p,
                    .mode = mode,
                    .uid = ::getuid(),
                    .gid = ::getgid()});
  }
  void Symlink(const std::string& p, const std::string& target) {
    uint64_t n = ++next_;
    ASSERT_EQ(::symlink(target.c_str(), (ref_ + "/" + p).c_str()), 0) << p;
    BindPath(p, ObjectId::New(n));
    ASSERT_TRUE(staging_->NewSymlink(StagedNameForNew(n), target).ok());
    ops_.push_back({.kind = OpKind::kSymlink,
                    .object = ObjectId::New(n),
                    .path = p,
                    .uid = ::getuid(),
                    .gid = ::getgid(),
                    .target = target});
  }
  void Mknod(const std::string& p, mode_t mode) {
    uint64_t n = ++next_;
    ASSERT_EQ(::mknod((ref_ + "/" + p).c_str(), mode, 0), 0) << p;
    ::chmod((ref_ + "/" + p).c_str(), mode & 07777);
    BindPath(p, ObjectId::New(n));
    ASSERT_TRUE(staging_->NewNode(StagedNameForNew(n), mode, 0).ok());
    ops_.push_back({.kind = OpKind::kMknod,
                    .object = ObjectId::New(n),
                    .path = p,
                    .mode = mode,
                    .uid = ::getuid(),
                    .gid = ::getgid()});
  }
  // rename(2) with RENAME_EXCHANGE: both names must exist and swap objects.
  void Exchange(const std::string& a, const std::string& b) {
    ObjectId ia = Id(a), ib = Id(b);
    ASSERT_EQ(::renameat2(AT_FDCWD, (ref_ + "/" + a).c_str(), AT_FDCWD, (ref_ + "/" + b).c_str(),
                          RENAME_EXCHANGE),
              0)
        << a << " " << b;
    ops_.push_back({.kind = OpKind::kRename,
                    .object = ia,
                    .path = a,
                    .path2 = b,
                    .replaced = ib,
                    .flags = RENAME_EXCHANGE});
  }
  void Write(const std::string& p, uint64_t off, const std::string& data) {
    ObjectId id = Id(p);
    int fd = ::open((ref_ + "/" + p).c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << p;
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(data.size()));
    ::close(fd);
    StagedFile* f = Staged(id);
    ASSERT_NE(f, nullptr);
    ASSERT_TRUE(f->Write(off, Bytes(data)).ok());
    // As the daemon logs them: small writes carry their data, big ones name staged extents.
    if (data.size() <= (64 << 10)) {
      ops_.push_back({.kind = OpKind::kWriteData,
                      .object = id,
                      .path = p,
                      .offset = off,
                      .length = data.size(),
                      .data = data});
      return;
    }
    ops_.push_back({.kind = OpKind::kWriteExtent,
                    .object = id,
                    .path = p,
                    .staged_file = f->name(),
                    .offset = off,
                    .length = data.size()});
  }
  void Truncate(const std::string& p, uint64_t size) {
    ObjectId id = Id(p);
    ASSERT_EQ(::truncate((ref_ + "/" + p).c_str(), static_cast<off_t>(size)), 0);
    StagedFile* f = Staged(id);
    ASSERT_NE(f, nullptr);
    ASSERT_TRUE(f->Truncate(size).ok());
    ops_.push_back(
        {.kind = OpKind::kSetattr, .object = id, .path = p, .set_mask = kSetSize, .size = size});
  }
  void Chmod(const std::string& p, mode_t mode) {
    ObjectId id = Id(p);
    ASSERT_EQ(::chmod((ref_ + "/" + p).c_str(), mode), 0);
    ops_.push_back(
        {.kind = OpKind::kSetattr, .object = id, .path = p, .mode = mode, .set_mask = kSetMode});
  }
  void SetXattr(const std::string& p, const std::string& name, const std::string& value) {
    ObjectId id = Id(p);
    ASSERT_EQ(::lsetxattr((ref_ + "/" + p).c_str(), name.c_str(), value.data(), value.size(), 0),
              0);
    ops_.push_back(
        {.kind = OpKind::kSetxattr, .object = id, .path = p, .name = name, .value = value});
  }
  void RemoveXattr(const std::string& p, const std::string& name) {
    ObjectId id = Id(p);
    ASSERT_EQ(::lremovexattr((ref_ + "/" + p).c_str(), name.c_str()), 0);
    ops_.push_back({.kind = OpKind::kRemovexattr, .object = id, .path = p, .name = name});
  }
  void Rename(const std::string& a, const std::string& b) {
    ObjectId id = Id(a);
    struct stat st;
    ObjectId replaced = ::lstat((ref_ + "/" + b).c_str(), &st) == 0 ? Id(b) : ObjectId{};
    ASSERT_EQ(::rename((ref_ + "/" + a).c_str(), (ref_ + "/" + b).c_str()), 0) << a << " " << b;
    ops_.push_back(
        {.kind = OpKind::kRename, .object = id, .path = a, .path2 = b, .replaced = replaced});
  }
  void Link(const std::string& a, const std::string& b) {
    ObjectId id = Id(a);
    ASSERT_EQ(::link((ref_ + "/" + a).c_str(), (ref_ + "/" + b).c_str()), 0);
    ops_.push_back({.kind = OpKind::kLink, .object = id, .path = a, .path2 = b});
  }
  void Unlink(const std::string& p) {
    ObjectId id = Id(p);
    ASSERT_EQ(::unlink((ref_ + "/" + p).c_str()), 0) << p;
    ops_.push_back({.kind = OpKind::kUnlink, .object = id, .path = p});
  }
  void Rmdir(const std::string& p) {
    ObjectId id = Id(p);
    ASSERT_EQ(::rmdir((ref_ + "/" + p).c_str()), 0) << p;
    ops_.push_back({.kind = OpKind::kRmdir, .object = id, .path = p});
  }

  const std::vector<Op>& ops() const { return ops_; }
  // The backing identity an original path had, to check apply keeps identities.
  ObjectId Original(const std::string& p) const { return originals_.at(p); }

 private:
  static std::span<const std::byte> Bytes(const std::string& s) {
    return std::as_bytes(std::span(s.data(), s.size()));
  }
  void MapTree(const std::string& rel) {
    std::string r = rel.empty() ? ref_ : ref_ + "/" + rel;
    auto names = ListNames(r);
    if (!names) return;
    for (const auto& n : *names) {
      std::string child = rel.empty() ? n : rel + "/" + n;
      struct stat b, rs;
      ASSERT_EQ(::lstat((backing_ + "/" + child).c_str(), &b), 0) << child;
      ASSERT_EQ(::lstat((ref_ + "/" + child).c_str(), &rs), 0) << child;
      ObjectId id = ObjectId::Existing(b.st_dev, b.st_ino);
      ids_[rs.st_ino] = id;
      originals_[child] = id;
      backing_path_[id] = child;
      if (S_ISDIR(rs.st_mode)) MapTree(child);
    }
  }
  void Bind(int fd, ObjectId id) {
    struct stat st;
    ::fstat(fd, &st);
    ids_[st.st_ino] = id;
  }
  void BindPath(const std::string& p, ObjectId id) {
    struct stat st;
    ::lstat((ref_ + "/" + p).c_str(), &st);
    ids_[st.st_ino] = id;
  }
  ObjectId Id(const std::string& p) {
    struct stat st;
    EXPECT_EQ(::lstat((ref_ + "/" + p).c_str(), &st), 0) << p;
    return ids_.at(st.st_ino);
  }
  StagedFile* Staged(const ObjectId& id) {
    if (id.kind == ObjectId::Kind::kNew) return staging_->Find(StagedNameForNew(id.number));
    std::string name = StagedNameForExisting(id.dev, id.ino);
    if (StagedFile* f = staging_->Find(name)) return f;
    int fd = ::open((backing_ + "/" + backing_path_.at(id)).c_str(), O_RDONLY);
    auto f = staging_->FileFor(name, fd);
    ::close(fd);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? *f : nullptr;
  }

  std::string backing_, ref_;
  TxStaging* staging_;
  uint64_t next_ = 0;
  std::map<ino_t, ObjectId> ids_;  // reference inode -> identity in the transaction's records
  std::map<std::string, ObjectId> originals_;
  std::map<ObjectId, std::string> backing_path_;
  std::vector<Op> ops_;
};

}  // namespace ktmfs::fstx

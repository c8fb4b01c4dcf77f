#include "fs/ops/posix_acl.h"

#include <errno.h>
#include <linux/capability.h>

#include <cstring>

#include "fs/ops/permission.h"
#include "log/little_endian.h"

namespace ktmfs::fs {
namespace {

constexpr uint32_t kXattrVersion = 2;
constexpr size_t kHeaderSize = 4;
constexpr size_t kEntrySize = 8;
constexpr uint32_t kUndefinedId = 0xffffffffu;

// The kernel's xattr form (struct posix_acl_xattr_header and _entry) is little-endian.
template <typename T>
void Append(std::string* out, T v) {
  std::byte b[sizeof(T)];
  log::StoreLe(b, v);
  out->append(reinterpret_cast<const char*>(b), sizeof b);
}

// posix_acl_valid: one owner, group and other entry, named entries between them, a mask
// whenever there is a named entry, and only rwx bits. The kernel does not ask named entries to
// be sorted or distinct (setfacl sorts them), so neither is that asked here.
bool Valid(const std::vector<PosixAcl::Entry>& entries) {
  enum { kWantUserObj, kUsers, kGroups, kWantOther, kDone } state = kWantUserObj;
  bool needs_mask = false;
  for (const auto& e : entries) {
    if (e.perm & ~7u) return false;
    switch (e.tag) {
      case PosixAcl::kUserObj:
        if (state != kWantUserObj) return false;
        state = kUsers;
        break;
      case PosixAcl::kUser:
      case PosixAcl::kGroup:
        if (state != (e.tag == PosixAcl::kUser ? kUsers : kGroups)) return false;
        needs_mask = true;
        break;
      case PosixAcl::kGroupObj:
        if (state != kUsers) return false;
        state = kGroups;
        break;
      case PosixAcl::kMask:
        if (state != kGroups) return false;
        state = kWantOther;
        break;
      case PosixAcl::kOther:
        if (state != kWantOther && !(state == kGroups && !needs_mask)) return false;
        state = kDone;
        break;
      default:
        return false;
    }
  }
  return state == kDone;
}

}  // namespace

bool IsAclXattr(const char* name) {
  return std::strcmp(name, kAclAccessXattr) == 0 || std::strcmp(name, kAclDefaultXattr) == 0;
}

int XattrReadErrno(const char* name, int err) {
  return err == EOPNOTSUPP && IsAclXattr(name) ? ENODATA : err;
}

std::optional<PosixAcl> PosixAcl::Parse(std::string_view value) {
  const auto* p = reinterpret_cast<const std::byte*>(value.data());
  if (value.size() < kHeaderSize || log::LoadLe<uint32_t>(p) != kXattrVersion) return std::nullopt;
  if ((value.size() - kHeaderSize) % kEntrySize != 0) return std::nullopt;
  PosixAcl acl;
  for (size_t at = kHeaderSize; at < value.size(); at += kEntrySize) {
    Entry e{log::LoadLe<uint16_t>(p + at), log::LoadLe<uint16_t>(p + at + 2),
            log::LoadLe<uint32_t>(p + at + 4)};
    if (e.tag != kUser && e.tag != kGroup) e.id = kUndefinedId;
    acl.entries_.push_back(e);
  }
  if (!acl.entries_.empty() && !Valid(acl.entries_)) return std::nullopt;
  return acl;
}

std::string PosixAcl::Serialize() const {
  std::string out;
  Append(&out, kXattrVersion);
  for (const auto& e : entries_) {
    Append(&out, e.tag);
    Append(&out, e.perm);
    Append(&out, e.tag == kUser || e.tag == kGroup ? e.id : kUndefinedId);
  }
  return out;
}

bool PosixAcl::EquivalentToMode(mode_t* perms) const {
  mode_t mode = 0;
  bool equivalent = true;
  for (const auto& e : entries_) {
    switch (e.tag) {
      case kUserObj:
        mode |= (e.perm & 7u) << 6;
        break;
      case kGroupObj:
        mode |= (e.perm & 7u) << 3;
        break;
      case kOther:
        mode |= e.perm & 7u;
        break;
      case kMask:
        mode = (mode & ~S_IRWXG) | ((e.perm & 7u) << 3);
        equivalent = false;
        break;
      default:
        equivalent = false;
        break;
    }
  }
  *perms = mode;
  return equivalent;
}

bool PosixAcl::CreateMasq(mode_t* mode_p) {
  mode_t mode = *mode_p;
  Entry* group_obj = nullptr;
  Entry* mask = nullptr;
  bool not_equiv = false;
  for (auto& e : entries_) {
    switch (e.tag) {
      case kUserObj:
        e.perm &= static_cast<uint16_t>((mode >> 6) | ~S_IRWXO);
        mode &= (static_cast<mode_t>(e.perm) << 6) | ~S_IRWXU;
        break;
      case kUser:
      case kGroup:
        not_equiv = true;
        break;
      case kGroupObj:
        group_obj = &e;
        break;
      case kOther:
        e.perm &= static_cast<uint16_t>(mode | ~S_IRWXO);
        mode &= e.perm | ~S_IRWXO;
        break;
      case kMask:
        mask = &e;
        not_equiv = true;
        break;
    }
  }
  Entry* group_class = mask != nullptr ? mask : group_obj;
  if (group_class != nullptr) {
    group_class->perm &= static_cast<uint16_t>((mode >> 3) | ~S_IRWXO);
    mode &= (static_cast<mode_t>(group_class->perm) << 3) | ~S_IRWXG;
  }
  *mode_p = (*mode_p & ~(S_IRWXU | S_IRWXG | S_IRWXO)) | mode;
  return not_equiv;
}

void PosixAcl::Chmod(mode_t mode) {
  Entry* group_obj = nullptr;
  Entry* mask = nullptr;
  for (auto& e : entries_) {
    switch (e.tag) {
      case kUserObj:
        e.perm = static_cast<uint16_t>((mode & S_IRWXU) >> 6);
        break;
      case kGroupObj:
        group_obj = &e;
        break;
      case kMask:
        mask = &e;
        break;
      case kOther:
        e.perm = static_cast<uint16_t>(mode & S_IRWXO);
        break;
    }
  }
  Entry* group_class = mask != nullptr ? mask : group_obj;
  if (group_class != nullptr) group_class->perm = static_cast<uint16_t>((mode & S_IRWXG) >> 3);
}

int PosixAcl::Permission(const Requester& who, const struct stat& st, int mask) const {
  mask &= kMayRead | kMayWrite | kMayExec;
  bool found = false;
  const Entry* matched = nullptr;
  for (const auto& e : entries_) {
    switch (e.tag) {
      case kUserObj:
        if (who.uid() == st.st_uid) return (e.perm & mask) == mask ? 0 : EACCES;
        break;
      case kUser:
        if (who.uid() == e.id) matched = &e;
        break;
      case kGroupObj:
      case kGroup:
        if (who.InGroup(e.tag == kGroupObj ? st.st_gid : e.id)) {
          found = true;
          if ((e.perm & mask) == mask) matched = &e;
        }
        break;
      case kOther:
        if (found) return EACCES;
        return (e.perm & mask) == mask ? 0 : EACCES;
    }
    if (matched != nullptr) break;
  }
  if (matched == nullptr) return EACCES;
  // Named entries and the owning group are limited by the mask.
  uint16_t allowed = matched->perm;
  for (const auto& e : entries_)
    if (e.tag == kMask) allowed &= e.perm;
  return (allowed & mask) == mask ? 0 : EACCES;
}

mode_t ModeAfterAclSet(const Requester& who, const struct stat& st, const PosixAcl& acl,
                       bool* equivalent) {
  mode_t perms = 0;
  *equivalent = acl.EquivalentToMode(&perms);
  mode_t mode = (st.st_mode & 07000) | perms;
  if ((mode & S_ISGID) && !who.InGroup(st.st_gid) && !who.CapableOver(CAP_FSETID, st))
    mode &= ~S_ISGID;
  return mode;
}

}  // namespace ktmfs::fs

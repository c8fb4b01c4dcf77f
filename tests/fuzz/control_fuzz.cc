// Fuzz target: every parser of untrusted control input (fs/control/control_decode.h,
// fs/control/begin_options.h and the /proc parsers, whose command names a user chooses) on
// arbitrary bytes. Besides never crashing, each checks what it promises: an accepted request is
// exactly a well-formed one, an accepted ioctl begin means the same as the xattr value it formats
// to, and accepted ids print back as given.
//
// Input: byte 0 selects the parser (mod 4):
//   0  the value of user.ktmfs.tx.begin: the rest
//   1  a control xattr: name, NUL, value (set and get)
//   2  an ioctl: a byte below 0xf0 picks one of ktmfs's commands (mod 7), whose argument the
//      rest is laid over; another is followed by any command (4 bytes, little-endian),
//      out_size (2 bytes) and the argument
//   3  /proc/TID/stat and status text: stat's length (2 bytes), stat, status
#include <sys/ioctl.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fs/control/begin_options.h"
#include "fs/control/control_decode.h"
#include "fs/control/proc_reader.h"
#include "ktmfs.h"

namespace ktmfs::fs {
namespace {

[[noreturn]] void Broken(const char* what, const std::string& detail) {
  std::fprintf(stderr, "control_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool Same(const BeginOptions& a, const BeginOptions& b) {
  return a.scope == b.scope && a.pid == b.pid && a.timeout_sec == b.timeout_sec && a.name == b.name;
}

void CheckOptions(const BeginOptions& o, const char* from) {
  if (o.name.size() > kMaxBeginNameBytes) Broken(from, "name longer than the limit");
  if (o.name.find('\0') != std::string::npos) Broken(from, "NUL in the name");
  if (o.pid < 0) Broken(from, "negative pid");
  // Whatever way a transaction was asked for, the text form says the same.
  const std::string text = FormatBeginOptions(o);
  auto again = ParseBeginOptions(text);
  if (!again.ok()) Broken(from, "'" + text + "' does not parse: " + again.status().ToString());
  if (!Same(o, *again)) Broken(from, "'" + text + "' parses to other options");
}

void BeginValue(std::string_view value) {
  auto o = ParseBeginOptions(value);
  if (!o.ok()) {
    if (o.status().code() != EINVAL) Broken("begin value", "refused without EINVAL");
    return;
  }
  CheckOptions(*o, "begin value");
}

void Xattr(std::string_view rest) {
  const size_t nul = rest.find('\0');
  const std::string_view name = rest.substr(0, nul);
  const std::string_view value = nul == std::string_view::npos ? "" : rest.substr(nul + 1);
  auto set = DecodeControlSetxattr(name, value);
  if (set.ok()) {
    if (name != KTMFS_XATTR_BEGIN && name != KTMFS_XATTR_COMMIT && name != KTMFS_XATTR_ROLLBACK)
      Broken("setxattr", "accepted the name '" + std::string(name) + "'");
    if (set->op == ControlOp::kBegin) CheckOptions(set->begin, "setxattr");
  } else if (set.status().code() != EPERM && set.status().code() != EINVAL) {
    Broken("setxattr", "refused with " + set.status().ToString());
  }
  auto get = DecodeControlGetxattr(name);
  if (get.ok() != (name == KTMFS_XATTR_TX || name == KTMFS_XATTR_HOLDER))
    Broken("getxattr", "wrong answer for the name '" + std::string(name) + "'");
}

constexpr uint32_t kCommands[] = {KTMFS_IOC_HELLO,    KTMFS_IOC_BEGIN, KTMFS_IOC_COMMIT,
                                  KTMFS_IOC_ROLLBACK, KTMFS_IOC_QUERY, KTMFS_IOC_HOLDER,
                                  KTMFS_IOC_LIST,     KTMFS_IOC_RECENT};

// A command is its whole number: ktmfs's numbers with another size or direction are others'.
bool IsKtmfsCommand(uint32_t cmd) {
  return std::find(std::begin(kCommands), std::end(kCommands), cmd) != std::end(kCommands);
}

void Ioctl(const uint8_t* data, size_t size) {
  uint32_t cmd = 0;
  size_t out_size = 0;
  std::vector<uint8_t> arg;
  if (size > 0 && data[0] < 0xf0) {
    // Mostly one of ktmfs's commands as FUSE delivers it, its struct laid over zeros, so that
    // mutations reach the checks of the fields rather than the size check.
    cmd = kCommands[data[0] % std::size(kCommands)];
    out_size = _IOC_SIZE(cmd);
    arg.assign(out_size, 0);
    std::memcpy(arg.data(), data + 1, std::min(out_size, size - 1));
  } else {
    if (size >= 5) std::memcpy(&cmd, data + 1, 4);
    uint16_t n = 0;
    if (size >= 7) std::memcpy(&n, data + 5, 2);
    out_size = n;
    if (size > 7) arg.assign(data + 7, data + size);
  }
  const uint8_t* in = arg.empty() ? nullptr : arg.data();
  const size_t in_size = arg.size();
  auto r = DecodeControlIoctl(cmd, in, in_size, out_size);
  if (!r.ok()) {
    const int code = r.status().code();
    if (code != EINVAL && code != ENOTTY) Broken("ioctl", "refused with " + r.status().ToString());
    if ((code == ENOTTY) != !IsKtmfsCommand(cmd))
      Broken("ioctl", "ENOTTY for one of ktmfs's commands, or not for another");
    return;
  }
  if (_IOC_SIZE(cmd) != in_size || in_size != out_size)
    Broken("ioctl", "accepted an argument of another size than its command's");
  switch (r->op) {
    case ControlOp::kBegin: {
      ktmfs_begin_args b;
      std::memcpy(&b, in, sizeof b);
      if (b.flags != 0 || b.scope > KTMFS_SCOPE_TREE) Broken("ioctl", "accepted a bad begin");
      CheckOptions(r->begin, "ioctl begin");
      break;
    }
    case ControlOp::kCommit:
    case ControlOp::kRollback: {
      ktmfs_txid t;
      std::memcpy(&t, in, sizeof t);
      if (t.flags != 0 || t.reserved != 0) Broken("ioctl", "accepted nonzero reserved fields");
      std::string given(t.id, strnlen(t.id, sizeof t.id));
      for (char& c : given)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (r->id.IsNil() ? !given.empty() && given != Guid{}.ToString() : r->id.ToString() != given)
        Broken("ioctl", "the id '" + given + "' decoded to " + r->id.ToString());
      break;
    }
    case ControlOp::kList:
      if (r->list_capacity > KTMFS_LIST_MAX) Broken("ioctl", "list capacity above the maximum");
      break;
    case ControlOp::kRecent:
      if (r->list_capacity > KTMFS_RECENT_MAX) Broken("ioctl", "recent capacity above the maximum");
      break;
    default:
      break;
  }
}

void Proc(const uint8_t* data, size_t size) {
  uint16_t n = 0;
  if (size >= 2) std::memcpy(&n, data, 2);
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  rest.remove_prefix(std::min<size_t>(2, size));
  const std::string stat(rest.substr(0, n));
  const std::string status(rest.substr(std::min<size_t>(n, rest.size())));
  (void)ParseProcFiles(1, stat, status);
  (void)ParseCredentials(1, status, 0, 0);
}

}  // namespace
}  // namespace ktmfs::fs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      ktmfs::fs::BeginValue(rest);
      break;
    case 1:
      ktmfs::fs::Xattr(rest);
      break;
    case 2:
      ktmfs::fs::Ioctl(data + 1, size - 1);
      break;
    default:
      ktmfs::fs::Proc(data + 1, size - 1);
  }
  return 0;
}

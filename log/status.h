// Errors as values: every fallible call in ktmfs returns a Status (or a Result<T>, which is a
// value or a Status). A Status carries an errno-style code, so the filesystem can hand it to the
// kernel unchanged, and a message that names what failed (file, stream, LSN, transaction).
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace ktmfs {

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status Ok() { return Status(); }
  // An errno that is not a failure (0, as a call that forgot to set errno leaves it) becomes EIO,
  // and a negative one (liburing's -errno) its positive: an error must never read as OK.
  static Status Error(int code, std::string message) {
    return Status(code > 0 ? code : (code < 0 ? -code : EIO), std::move(message));
  }
  // A failed system call: `what` names the call and what it acted on; ": strerror" follows.
  static Status FromErrno(int code, const std::string& what);
  // The same with the calling thread's errno.
  static Status FromErrno(const std::string& what) { return FromErrno(errno, what); }
  // The conditions callers branch on get names; any other errno goes through Error().
  static Status IoError(std::string m) { return Status(EIO, std::move(m)); }
  static Status Corruption(std::string m) { return Status(EUCLEAN, std::move(m)); }
  static Status NotFound(std::string m) { return Status(ENOENT, std::move(m)); }
  static Status InvalidArgument(std::string m) { return Status(EINVAL, std::move(m)); }
  // ENOSPC to the kernel, but told apart from a full filesystem's ENOSPC: what the caller can do
  // differs (end an old transaction, not free space).
  static Status LogFull(std::string m) {
    Status s(ENOSPC, std::move(m));
    s.log_full_ = true;
    return s;
  }
  static Status Busy(std::string m) { return Status(EBUSY, std::move(m)); }

  bool ok() const { return code_ == 0; }
  // The errno the kernel and the tools get for this Status, as it is: 0 when OK, and a positive
  // errno for every failure (Error() sees to that). There is no other mapping.
  int code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsCorruption() const { return code_ == EUCLEAN; }
  bool IsNotFound() const { return code_ == ENOENT; }
  bool IsLogFull() const { return log_full_; }

  // "message (strerror)" or "OK", for logs and tool output.
  std::string ToString() const;

  // Prefixes context, so a low-level "short read" becomes "stream tm: LSN 0x...: short read".
  Status Annotate(const std::string& context) const {
    if (ok()) return *this;
    Status s(code_, context + ": " + message_);
    s.log_full_ = log_full_;
    return s;
  }

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
  bool log_full_ = false;
};

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must be an error

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ktmfs

// Early return on error, the one macro ktmfs allows itself.
#define KTMFS_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::ktmfs::Status ktmfs_status_ = (expr);        \
    if (!ktmfs_status_.ok()) return ktmfs_status_; \
  } while (0)

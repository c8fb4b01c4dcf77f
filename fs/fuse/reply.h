// What an operation answers, as a value. The operations in fs/ops return a Reply, and Send() is
// the one place that hands it to libfuse: the operations decide, the adapter replies
// (fs/ops/adapter.h). A reply the kernel refuses (its request was interrupted) can carry what
// undoes the operation's effect for the kernel: an open whose file the kernel never got must not
// stay open in the daemon.
#pragma once

#include <errno.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "fs/tx/visibility_gate.h"

namespace ktmfs::fs {

class Reply {
 public:
  // An errno, or 0: the success of an operation that answers nothing else.
  static Reply Error(int err) { return Reply(Err{err}); }
  static Reply Ok() { return Error(0); }
  // No reply at all (forget).
  static Reply None() { return Reply(Nothing{}); }
  static Reply Entry(const fuse_entry_param& e) { return Reply(EntryOut{e}); }
  static Reply Attr(const struct stat& st, double timeout) { return Reply(AttrOut{st, timeout}); }
  static Reply Readlink(std::string target) { return Reply(LinkOut{std::move(target)}); }
  // Bytes the kernel copies to the caller: a read's, a listing's, an xattr's value or names.
  static Reply Bytes(std::vector<char> data) { return Reply(BytesOut{std::move(data)}); }
  static Reply Bytes(const std::string& data) {
    return Bytes(std::vector<char>(data.begin(), data.end()));
  }
  // The size of an xattr's value or of its names, when the caller asked with size 0.
  static Reply XattrSize(size_t size) { return Reply(XattrSizeOut{size}); }
  // An xattr's value, or the NUL-separated names of listxattr, for a caller that asked with
  // room for `asked` bytes: their size when it asked with 0, ERANGE when they do not fit.
  static Reply XattrBytes(std::vector<char> data, size_t asked) {
    if (asked == 0) return XattrSize(data.size());
    if (data.size() > asked) return Error(ERANGE);
    return Bytes(std::move(data));
  }
  static Reply XattrBytes(const std::string& data, size_t asked) {
    return XattrBytes(std::vector<char>(data.begin(), data.end()), asked);
  }
  static Reply Statfs(const struct statvfs& sv) { return Reply(StatfsOut{sv}); }
  static Reply Written(size_t n) { return Reply(WriteOut{n}); }
  // Up to `size` bytes of `fd` at `pos`, read as the reply goes out: spliced from the file to
  // /dev/fuse, or, for a request that came over FUSE's io_uring, read straight into the ring
  // entry that carries the reply. `fd` must stay open until Send returns.
  static Reply FileData(int fd, size_t size, off_t pos) {
    return Reply(FileDataOut{fd, size, pos});
  }
  static Reply Seek(off_t off) { return Reply(SeekOut{off}); }
  // An open (directory or file) with the handle `fi` carries; `backing_id` not 0 has the kernel
  // pass the file through to that backing file (fs/fuse/kernel_channel.h).
  static Reply Open(const fuse_file_info& fi, int32_t backing_id = 0) {
    return Reply(OpenOut{fi, backing_id});
  }
  static Reply Create(const fuse_entry_param& e, const fuse_file_info& fi, int32_t backing_id = 0) {
    return Reply(CreateOut{e, fi, backing_id});
  }
  // The ioctl's result 0 and its output bytes.
  static Reply Ioctl(std::vector<char> out) { return Reply(IoctlOut{std::move(out)}); }

  // What to do if the kernel refuses the reply, after what was given before; runs at most once,
  // in Send.
  Reply&& IfRefused(std::function<void()> undo) && {
    if (undo_) {
      undo = [first = std::move(undo_), then = std::move(undo)] {
        first();
        then();
      };
    }
    undo_ = std::move(undo);
    return std::move(*this);
  }

  // Keeps `pass`, a reader's hold on committed objects (fs/tx/visibility_gate.h), until the
  // reply has gone out: a commit's apply changes those objects, and has the kernel drop what it
  // cached of them, only once the kernel has this answer, read before the apply.
  Reply&& Holding(fstx::VisibilityGate::Pass pass) && {
    pass_ = std::move(pass);
    return std::move(*this);
  }

  // The errno of an error reply, 0 for any other.
  int error() const {
    const Err* e = std::get_if<Err>(&out_);
    return e != nullptr ? e->err : 0;
  }
  // What a reply carries, for tests of the operations: null when it is of another kind.
  const fuse_entry_param* entry() const {
    const EntryOut* r = std::get_if<EntryOut>(&out_);
    return r != nullptr ? &r->e : nullptr;
  }
  const struct stat* attr() const {
    const AttrOut* r = std::get_if<AttrOut>(&out_);
    return r != nullptr ? &r->st : nullptr;
  }
  const std::string* link() const {
    const LinkOut* r = std::get_if<LinkOut>(&out_);
    return r != nullptr ? &r->target : nullptr;
  }
  const std::vector<char>* bytes() const {
    const BytesOut* r = std::get_if<BytesOut>(&out_);
    return r != nullptr ? &r->data : nullptr;
  }

 private:
  friend int Send(fuse_req_t req, Reply reply);

 public:
  // The alternatives, for Send; make a Reply with the functions above.
  struct Err {
    int err;
  };
  struct Nothing {};
  struct EntryOut {
    fuse_entry_param e;
  };
  struct AttrOut {
    struct stat st;
    double timeout;
  };
  struct LinkOut {
    std::string target;
  };
  struct BytesOut {
    std::vector<char> data;
  };
  struct XattrSizeOut {
    size_t size;
  };
  struct StatfsOut {
    struct statvfs sv;
  };
  struct WriteOut {
    size_t n;
  };
  struct SeekOut {
    off_t off;
  };
  struct FileDataOut {
    int fd;
    size_t size;
    off_t pos;
  };
  struct OpenOut {
    fuse_file_info fi;
    int32_t backing_id;
  };
  struct CreateOut {
    fuse_entry_param e;
    fuse_file_info fi;
    int32_t backing_id;
  };
  struct IoctlOut {
    std::vector<char> out;
  };

 private:
  using Out = std::variant<Err, Nothing, EntryOut, AttrOut, LinkOut, BytesOut, XattrSizeOut,
                           StatfsOut, WriteOut, SeekOut, FileDataOut, OpenOut, CreateOut, IoctlOut>;
  explicit Reply(Out out) : out_(std::move(out)) {}

  Out out_;
  std::function<void()> undo_;
  fstx::VisibilityGate::Pass pass_;
};

// One descriptor-backed buffer (FUSE_BUFVEC_INIT is a C compound literal): lets libfuse splice.
inline fuse_bufvec FdBuffer(size_t size, int fd, off_t pos) {
  fuse_bufvec v{};
  v.count = 1;
  v.buf[0].size = size;
  v.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  v.buf[0].fd = fd;
  v.buf[0].pos = pos;
  return v;
}

// Sends `reply` for `req`: 0, or libfuse's negative errno when the kernel refused it (after
// running what the reply carries for that case).
int Send(fuse_req_t req, Reply reply);

}  // namespace ktmfs::fs

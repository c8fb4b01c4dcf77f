#include "fs/fuse/reply.h"

#include <errno.h>
#include <unistd.h>

#include "fs/fuse/fuse_ring.h"
#include "fs/fuse/kernel_channel.h"

namespace ktmfs::fs {
namespace {

// Each alternative of the reply, as libfuse sends it.
struct Sender {
  fuse_req_t req;

  int operator()(const Reply::Err& r) const { return fuse_reply_err(req, r.err); }
  int operator()(const Reply::Nothing&) const {
    fuse_reply_none(req);
    return 0;
  }
  int operator()(const Reply::EntryOut& r) const { return fuse_reply_entry(req, &r.e); }
  int operator()(const Reply::AttrOut& r) const { return fuse_reply_attr(req, &r.st, r.timeout); }
  int operator()(const Reply::LinkOut& r) const {
    return fuse_reply_readlink(req, r.target.c_str());
  }
  int operator()(const Reply::BytesOut& r) const {
    return fuse_reply_buf(req, r.data.data(), r.data.size());
  }
  int operator()(const Reply::XattrSizeOut& r) const { return fuse_reply_xattr(req, r.size); }
  int operator()(const Reply::StatfsOut& r) const { return fuse_reply_statfs(req, &r.sv); }
  int operator()(const Reply::WriteOut& r) const { return fuse_reply_write(req, r.n); }
  int operator()(const Reply::SeekOut& r) const { return fuse_reply_lseek(req, r.off); }
  int operator()(const Reply::FileDataOut& r) const {
    // A splice would fill a pipe only for the channel to read it back into the entry.
    if (char* room = FuseRing::ReplyRoom(r.size)) {
      size_t got = 0;
      while (got < r.size) {
        ssize_t n = pread(r.fd, room + got, r.size - got, r.pos + static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fuse_reply_err(req, errno);
        if (n == 0) break;
        got += static_cast<size_t>(n);
      }
      return fuse_reply_buf(req, room, got);
    }
    fuse_bufvec v = FdBuffer(r.size, r.fd, r.pos);
    return fuse_reply_data(req, &v, FUSE_BUF_SPLICE_MOVE);
  }
  int operator()(const Reply::OpenOut& r) const {
    KernelChannel::PassNextOpenReplyTo(r.backing_id);
    const int sent = fuse_reply_open(req, &r.fi);
    KernelChannel::PassNextOpenReplyTo(0);
    return sent;
  }
  int operator()(const Reply::CreateOut& r) const {
    KernelChannel::PassNextOpenReplyTo(r.backing_id);
    const int sent = fuse_reply_create(req, &r.e, &r.fi);
    KernelChannel::PassNextOpenReplyTo(0);
    return sent;
  }
  int operator()(const Reply::IoctlOut& r) const {
    return fuse_reply_ioctl(req, 0, r.out.empty() ? nullptr : r.out.data(), r.out.size());
  }
};

}  // namespace

int Send(fuse_req_t req, Reply reply) {
  const int sent = std::visit(Sender{req}, reply.out_);
  if (sent != 0 && reply.undo_) reply.undo_();
  return sent;
}

}  // namespace ktmfs::fs

#include "fs/control.h"

#include <errno.h>
#include <fuse_lowlevel.h>

#include "fs/filesystem.h"

namespace ktmfs::fs {

int HandleControlXattr(const CallerContext& /*caller*/, const char* /*name*/, const char* /*value*/,
                       size_t /*size*/) {
  return EPERM;
}

int HandleControlIoctl(const ControlIoctl& /*request*/, std::vector<char>* /*out*/,
                       int* /*result*/) {
  return ENOTTY;
}

namespace {

void OpIoctl(fuse_req_t req, fuse_ino_t /*ino*/, unsigned int cmd, void* /*arg*/,
             fuse_file_info* /*fi*/, unsigned flags, const void* in_buf, size_t in_bufsz,
             size_t out_bufsz) {
  // Only restricted ioctls reach a FUSE filesystem: sizes come from the command encoding, and
  // fixed-width structures make 32-bit (FUSE_IOCTL_COMPAT) callers encode the same commands.
  if (flags & FUSE_IOCTL_UNRESTRICTED) {
    fuse_reply_err(req, ENOTTY);
    return;
  }
  ControlIoctl request{
      CallerContext::Of(req), cmd, (flags & FUSE_IOCTL_DIR) != 0, in_buf, in_bufsz, out_bufsz};
  std::vector<char> out;
  int result = 0;
  int err = HandleControlIoctl(request, &out, &result);
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    fuse_reply_ioctl(req, result, out.empty() ? nullptr : out.data(), out.size());
  }
}

}  // namespace

void AddControlOps(fuse_lowlevel_ops* ops) {
  ops->ioctl = OpIoctl;
}

}  // namespace ktmfs::fs

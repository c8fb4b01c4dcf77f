// Big transactional data bypasses the page cache. A transaction's data is written once to its
// staged file and read once more, by apply, to reach the backing file: neither pass needs the
// bytes cached, and filling the page cache with them costs memory (fresh pages to allocate)
// and, at prepare, a writeback of everything. O_DIRECT writes them straight to the device.
//
// O_DIRECT wants offsets, lengths and memory aligned; these helpers take any range, send its
// aligned middle through a second descriptor opened with O_DIRECT (a bounce buffer where the
// memory is not aligned) and the unaligned head and tail through the ordinary one. The kernel
// keeps the two coherent (a direct write writes back and drops cached pages of its range).
// Where a filesystem refuses O_DIRECT (no descriptor, or EINVAL on an I/O) the ordinary
// descriptor does it all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "log/status.h"

namespace ktmfs::fstx {

// The alignment used for offsets, lengths and memory: a page, which covers every common
// logical block size.
inline constexpr uint64_t kDirectAlign = 4096;

// A descriptor for the same open file with O_DIRECT added (`flags` is the access mode and
// extras such as O_CLOEXEC), or -1 when the filesystem does not allow it.
int ReopenDirect(int fd, int flags);

// Writes all of `data` at `offset` of the file that `fd` and `direct_fd` (-1: none) both open.
Status WriteAt(int fd, int direct_fd, std::span<const std::byte> data, uint64_t offset,
               const std::string& what);

// The largest folio the page cache gives a file on x86-64 (a PMD's 2 MiB). Folios are aligned
// to their size, so none reaches across a multiple of this.
inline constexpr uint64_t kLargestFolio = 2 << 20;

// Copies [offset, offset+length) of one file to the same range of another. Each side has an
// ordinary descriptor and a direct one (-1: none). Without direct descriptors the copy stays
// in the kernel (copy_file_range) where it can.
//
// Only the part between the first and the last multiple of kLargestFolio in the range goes
// direct: a direct write drops every cached folio it touches, whole, and a large folio at
// either end of the range also holds bytes outside it, which the copy does not change. Their
// next reader would read them from the device, behind the sync that follows the copy (a
// reader of a big file's first page waited 350-440 ms after the commit). The ends go through
// the page cache.
Status CopyAt(int in, int in_direct, int out, int out_direct, uint64_t offset, uint64_t length,
              const std::string& what);
// Whether CopyAt sends any of [offset, offset+length) direct: if not, its caller need not open
// direct descriptors.
bool CopyGoesDirect(uint64_t offset, uint64_t length);

// A buffer aligned for O_DIRECT, at least `size` bytes, owned by the calling thread and
// reused by its next call (FUSE workers gather request data into it).
std::span<std::byte> ThreadBuffer(size_t size);

// An aligned buffer (posix_memalign; free with std::free) and its size.
struct OwnedBuffer {
  std::byte* data = nullptr;
  size_t size = 0;
};
// If `data` is where this thread's ThreadBuffer starts, hands that buffer over (so data held in
// it need not be copied) and gives the thread `replacement` for its next request; otherwise
// returns an empty OwnedBuffer, and `replacement` stays the caller's.
OwnedBuffer AdoptThreadBuffer(const std::byte* data, OwnedBuffer replacement);

}  // namespace ktmfs::fstx

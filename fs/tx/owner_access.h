// Apply and its syncs reopen backing files by path, as the daemon. A daemon without
// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (an unprivileged user's mount) is refused by the mode
// bits of its own files: a transaction that wrote a file and then made it mode 000 would leave
// a commit whose sync, and whose redo at the next mount, fail. As the owner, the daemon may
// change the mode: it grants itself the access for the open and restores the mode at once.
#pragma once

#include <string>

namespace ktmfs::fstx {

// open(2) of `path` with `flags` (O_NOFOLLOW is added). On EACCES, if the daemon owns the
// object, opens it with the owner's read or write bit set for the moment. -1 and errno as
// open(2) otherwise. Only a regular file or a directory is opened; anything else at `path` is
// ESTALE, never opened: a FIFO put at the name behind the daemon's back would block the open
// until a writer or reader came (a recovery that never ended), and a device's open acts on it.
int OpenAsOwner(const std::string& path, int flags);

// lsetxattr(2) / lremovexattr(2) of `path`, which a user.* attribute allows only with write
// access: on EACCES, if the daemon owns the object, again with the owner's write bit set for
// the moment (regress tx/030). -1 and errno as the call otherwise.
int SetXattrAsOwner(const std::string& path, const std::string& name, const std::string& value);
int RemoveXattrAsOwner(const std::string& path, const std::string& name);

}  // namespace ktmfs::fstx

// Xattr names whose meaning the daemon and apply act on.
#pragma once

namespace ktmfs::fstx {

// The file capability xattr: a write by a caller without CAP_FSETID removes it, as it drops
// set-id bits.
inline constexpr const char* kCapabilityXattr = "security.capability";

}  // namespace ktmfs::fstx

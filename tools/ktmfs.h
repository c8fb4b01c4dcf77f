/* ktmfs.h: the client interface of the ktmfs transactional filesystem.
 *
 * The ioctl numbers, their structs and the names of the virtual extended attributes are defined
 * here once, for C and C++ programs and for the ktmfs tools themselves. See ktmfs.h(3).
 */
#ifndef KTMFS_H
#define KTMFS_H

/* Virtual extended attributes (never stored, never listed). */
#define KTMFS_XATTR_PREFIX "user.ktmfs."
#define KTMFS_XATTR_TX "user.ktmfs.tx"
#define KTMFS_XATTR_BEGIN "user.ktmfs.tx.begin"
#define KTMFS_XATTR_COMMIT "user.ktmfs.tx.commit"
#define KTMFS_XATTR_ROLLBACK "user.ktmfs.tx.rollback"
#define KTMFS_XATTR_HOLDER "user.ktmfs.tx.holder"

#endif /* KTMFS_H */

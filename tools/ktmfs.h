/* ktmfs.h: the client interface of the ktmfs transactional filesystem. See ktmfs.h(3).
 *
 * Everything a program needs to drive transactions on a ktmfs mount is defined here once: the
 * ioctl numbers and their structs, the names of the virtual extended attributes, and small
 * inline helpers (ktmfs_begin, ktmfs_commit, ...) that the ktmfs tools use themselves.
 *
 * ABI rules: every struct has fixed-width fields, explicit padding and a size that is a multiple
 * of 8, so 32- and 64-bit callers encode the same command; every ioctl is _IOWR, as FUSE passes
 * only well-formed commands to a server and takes the data size from the encoding. Reserved
 * fields and flags must be zero (EINVAL otherwise), which leaves room to extend.
 */
#ifndef KTMFS_H
#define KTMFS_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/xattr.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Virtual extended attributes (never stored, never listed) ----------------------------- */

#define KTMFS_XATTR_PREFIX "user.ktmfs."
#define KTMFS_XATTR_TX "user.ktmfs.tx"            /* get: the caller's transaction id */
#define KTMFS_XATTR_BEGIN "user.ktmfs.tx.begin"   /* set: "scope=.. pid=.. timeout=.. name=.." */
#define KTMFS_XATTR_COMMIT "user.ktmfs.tx.commit" /* set: commit the caller's transaction */
#define KTMFS_XATTR_ROLLBACK                                                                 \
  "user.ktmfs.tx.rollback"                        /* set: roll back the caller's transaction \
                                                   */
#define KTMFS_XATTR_HOLDER "user.ktmfs.tx.holder" /* get: the transaction holding the object */

/* ---- Ioctls ------------------------------------------------------------------------------- */

/* A magic byte the VFS does not interpret itself (it handles 'f', 'X', 'T' and 0x94 commands). */
#define KTMFS_IOC_MAGIC 0xCE

#define KTMFS_ID_LEN 36  /* a GUID in text form: 8-4-4-4-12 hexadecimal digits */
#define KTMFS_ID_SIZE 40 /* room for the id, NUL-terminated and padded */
#define KTMFS_NAME_SIZE 128

enum ktmfs_scope {
  KTMFS_SCOPE_THREAD = 1,  /* one thread */
  KTMFS_SCOPE_PROCESS = 2, /* one process, all its threads */
  KTMFS_SCOPE_TREE = 3,    /* a process and every descendant started after the begin */
};

enum ktmfs_state {
  KTMFS_STATE_ACTIVE = 1,
  KTMFS_STATE_PREPARING = 2,
  KTMFS_STATE_PREPARED = 3,
  KTMFS_STATE_COMMITTING = 4,
  KTMFS_STATE_COMMITTED = 5,
  KTMFS_STATE_ROLLING_BACK = 6,
  KTMFS_STATE_ROLLED_BACK = 7,
};

/* The version of this interface; KTMFS_IOC_HELLO reports the daemon's. 2 added
 * KTMFS_IOC_REASON, 3 KTMFS_IOC_RECENT, 4 KTMFS_TXF_APPLY_PENDING in a commit's answer, 5
 * KTMFS_TXF_OUTCOME_UNKNOWN in a list; an older daemon answers a newer command with ENOTTY. */
#define KTMFS_ABI_VERSION 5

struct ktmfs_hello_args {
  uint32_t abi_version; /* out */
  uint32_t reserved;
  char daemon_version[24]; /* out: e.g. "0.1.0" */
};

struct ktmfs_begin_args {
  uint32_t scope;             /* in: enum ktmfs_scope; 0 means KTMFS_SCOPE_PROCESS */
  int32_t pid;                /* in: the thread or process to bind; 0 means the caller */
  uint32_t timeout_sec;       /* in: roll back after this long; 0 means no timeout */
  uint32_t flags;             /* in: must be 0 */
  char name[KTMFS_NAME_SIZE]; /* in: description, NUL-terminated (may be empty) */
  char id[KTMFS_ID_SIZE];     /* out: the new transaction's id */
};

/* For commit, rollback, query and holder: an id in or out. */
struct ktmfs_txid {
  char id[KTMFS_ID_SIZE]; /* commit/rollback: in, empty = the caller's; query/holder: out */
  uint32_t flags;         /* in: must be 0; out, after a commit: KTMFS_TXF_APPLY_PENDING or 0 */
  uint32_t reserved;
};

struct ktmfs_tx_info {
  char id[KTMFS_ID_SIZE];
  uint32_t owner_uid;
  int32_t bound_pid;      /* the process (or thread) the scope is bound to; 0 if none */
  uint32_t scope;         /* enum ktmfs_scope */
  uint32_t state;         /* enum ktmfs_state */
  uint64_t begin_time_ns; /* CLOCK_REALTIME at begin; 0 if unknown (recovered at mount) */
  uint64_t bytes_logged;
  uint32_t objects_locked;
  uint32_t rm_count; /* resource managers (backing directories) enlisted */
  uint32_t timeout_sec;
  uint32_t flags; /* KTMFS_TXF_*; was reserved (0) before KTMFS_TXF_APPLY_PENDING */
  char name[64];  /* description, cut to fit; empty for other users unless root */
};

/* Committed, but applying it to the backing directory failed for a reason outside ktmfs (EIO,
 * an administrator's change): the daemon retries it every few seconds and at every mount, its
 * objects stay locked meanwhile, and its log says why. state is KTMFS_STATE_COMMITTED. A commit
 * that succeeds with its apply pending answers with this flag (ABI version 4), and
 * KTMFS_IOC_REASON then says why: not all of its changes are visible yet. */
#define KTMFS_TXF_APPLY_PENDING 0x1u

#define KTMFS_LIST_MAX 64

/* One page of the transaction table: set start and capacity; read count and total. */
struct ktmfs_list_args {
  uint32_t start;    /* in: index of the first entry wanted */
  uint32_t capacity; /* in: entries the caller has room for, at most KTMFS_LIST_MAX */
  uint32_t count;    /* out: entries filled */
  uint32_t total;    /* out: transactions in the table */
  struct ktmfs_tx_info entries[KTMFS_LIST_MAX];
};

#define KTMFS_IOC_HELLO _IOWR(KTMFS_IOC_MAGIC, 0, struct ktmfs_hello_args)
#define KTMFS_IOC_BEGIN _IOWR(KTMFS_IOC_MAGIC, 1, struct ktmfs_begin_args)
#define KTMFS_IOC_COMMIT _IOWR(KTMFS_IOC_MAGIC, 2, struct ktmfs_txid)
#define KTMFS_IOC_ROLLBACK _IOWR(KTMFS_IOC_MAGIC, 3, struct ktmfs_txid)
#define KTMFS_IOC_QUERY _IOWR(KTMFS_IOC_MAGIC, 4, struct ktmfs_txid)
#define KTMFS_IOC_HOLDER _IOWR(KTMFS_IOC_MAGIC, 5, struct ktmfs_txid)
#define KTMFS_IOC_LIST _IOWR(KTMFS_IOC_MAGIC, 6, struct ktmfs_list_args)

/* The daemon's own sentence for the calling thread's last failed control request (ABI version
 * 2), or for its commit answered with KTMFS_TXF_APPLY_PENDING (4): asked right after, it says
 * what the errno cannot ("transaction ... was rolled back 40 s ago: its timeout expired"). Each
 * message is given once and kept for a minute at most; text is empty when there is none. */
#define KTMFS_REASON_SIZE 512
struct ktmfs_reason_args {
  uint32_t flags; /* must be 0 */
  uint32_t reserved;
  char text[KTMFS_REASON_SIZE]; /* out: NUL-terminated */
};
#define KTMFS_IOC_REASON _IOWR(KTMFS_IOC_MAGIC, 7, struct ktmfs_reason_args)

/* How a transaction ended (ABI version 3). */
enum ktmfs_outcome {
  KTMFS_OUTCOME_COMMITTED = 1,
  KTMFS_OUTCOME_ROLLED_BACK = 2,   /* reason says why when nobody asked for it */
  KTMFS_OUTCOME_COMMIT_FAILED = 3, /* reason says why; rolled back unless it says otherwise */
};

/* Settled by recovery at mount: it was unfinished or unapplied when the last daemon stopped. */
#define KTMFS_TXF_RECOVERED 0x2u

/* In a list (ABI version 5): its commit's outcome is unknown until the next mount recovers the
 * log (a log write failed at its decision); it holds its objects until then. state is
 * KTMFS_STATE_PREPARED. */
#define KTMFS_TXF_OUTCOME_UNKNOWN 0x4u

/* owner_uid of a transaction recovery settled without knowing who began it. */
#define KTMFS_UID_UNKNOWN 0xFFFFFFFFu

struct ktmfs_ended_info {
  char id[KTMFS_ID_SIZE];
  uint32_t owner_uid;     /* KTMFS_UID_UNKNOWN if not known */
  int32_t bound_pid;      /* 0 if none or unknown */
  uint32_t outcome;       /* enum ktmfs_outcome */
  uint32_t flags;         /* KTMFS_TXF_APPLY_PENDING (still being applied), KTMFS_TXF_RECOVERED */
  uint64_t begin_time_ns; /* CLOCK_REALTIME; 0 if unknown (recovered at mount) */
  uint64_t end_time_ns;   /* CLOCK_REALTIME */
  char name[64];          /* description, cut to fit; empty for other users unless root */
  char reason[128];       /* e.g. "its timeout expired"; empty for other users unless root */
};

#define KTMFS_RECENT_MAX 32

/* One page of the transactions that ended lately, newest first (the daemon remembers the last
 * few hundred since it mounted, those recovery settled included). Set start and capacity. */
struct ktmfs_recent_args {
  uint32_t start;    /* in: index of the first entry wanted */
  uint32_t capacity; /* in: entries the caller has room for, at most KTMFS_RECENT_MAX */
  uint32_t count;    /* out: entries filled */
  uint32_t total;    /* out: endings remembered */
  struct ktmfs_ended_info entries[KTMFS_RECENT_MAX];
};
#define KTMFS_IOC_RECENT _IOWR(KTMFS_IOC_MAGIC, 8, struct ktmfs_recent_args)

/* A commit that fails with this errno has an unknown outcome: its decision could not be made
 * durable, yet may have reached the disk. The next mount's recovery settles it. */
#define KTMFS_EOUTCOME_UNKNOWN EINPROGRESS

/* ---- Exit codes shared by the tools (see each tool's man page) -------------------------- */

#define KTMFS_EXIT_OK 0
#define KTMFS_EXIT_FAILED 1    /* the operation was refused or failed */
#define KTMFS_EXIT_USAGE 2     /* bad command line */
#define KTMFS_EXIT_NO_TX 3     /* no transaction is bound to the caller */
#define KTMFS_EXIT_NOT_KTMFS 4 /* the path is not on a ktmfs mount */
/* txrun passes on its command's status, so its own outcomes use codes commands rarely do. */
#define KTMFS_EXIT_TXRUN_USAGE 121     /* txrun: bad command line */
#define KTMFS_EXIT_TXRUN_NOT_KTMFS 122 /* txrun: the path is not on a ktmfs mount */
#define KTMFS_EXIT_COMMIT_FAILED 123   /* txrun: the command succeeded, its commit did not */
#define KTMFS_EXIT_TXRUN_FAILED 125    /* txrun: could not begin the transaction */
/* 124 is left to timeout(1), which often runs txrun. */

/* ---- Helpers -----------------------------------------------------------------------------
 * Each takes a descriptor of any file or directory on the mount (O_RDONLY is enough) and
 * returns 0 or a negative errno. -ENOTTY means the descriptor is not on a ktmfs mount.
 */

#define KTMFS_FUSE_SUPER_MAGIC 0x65735546

static inline int ktmfs_ioctl_(int fd, unsigned long cmd, void* arg) {
  return ioctl(fd, cmd, arg) == 0 ? 0 : -errno;
}

/* 0 if fd is on a ktmfs mount, -ENOTTY if not; fills *hello if non-NULL. */
static inline int ktmfs_hello(int fd, struct ktmfs_hello_args* hello) {
  struct statfs sfs;
  struct ktmfs_hello_args h;
  int rc;
  if (fstatfs(fd, &sfs) != 0) return -errno;
  if ((uint32_t)sfs.f_type != KTMFS_FUSE_SUPER_MAGIC) return -ENOTTY;
  memset(&h, 0, sizeof h);
  rc = ktmfs_ioctl_(fd, KTMFS_IOC_HELLO, &h);
  if (rc == -EINVAL || rc == -ENOSYS) rc = -ENOTTY; /* another FUSE filesystem */
  if (rc == 0 && hello) *hello = h;
  return rc;
}

/* Begins a transaction bound to `pid` (0: the caller) with `scope`; writes its id to id_out
 * (KTMFS_ID_SIZE bytes) if non-NULL. */
static inline int ktmfs_begin(int fd, enum ktmfs_scope scope, pid_t pid, uint32_t timeout_sec,
                              const char* name, char* id_out) {
  struct ktmfs_begin_args b;
  int rc;
  memset(&b, 0, sizeof b);
  b.scope = (uint32_t)scope;
  b.pid = (int32_t)pid;
  b.timeout_sec = timeout_sec;
  if (name) {
    if (strlen(name) >= sizeof b.name) return -ENAMETOOLONG;
    strcpy(b.name, name);
  }
  rc = ktmfs_ioctl_(fd, KTMFS_IOC_BEGIN, &b);
  if (rc == 0 && id_out) memcpy(id_out, b.id, KTMFS_ID_SIZE);
  return rc;
}

/* flags_out, if not NULL, gets the answer's flags. */
static inline int ktmfs_end_(int fd, unsigned long cmd, const char* id, uint32_t* flags_out) {
  struct ktmfs_txid t;
  int rc;
  memset(&t, 0, sizeof t);
  if (flags_out) *flags_out = 0;
  if (id) {
    if (strlen(id) >= sizeof t.id) return -EINVAL;
    strcpy(t.id, id);
  }
  rc = ktmfs_ioctl_(fd, cmd, &t);
  if (rc == 0 && flags_out) *flags_out = t.flags;
  return rc;
}

/* Commits transaction `id`, or the caller's if id is NULL or empty. Returns once durable. */
static inline int ktmfs_commit(int fd, const char* id) {
  return ktmfs_end_(fd, KTMFS_IOC_COMMIT, id, NULL);
}

/* As ktmfs_commit, and sets *flags_out to KTMFS_TXF_APPLY_PENDING when the commit succeeded but
 * its apply is pending (0 otherwise, and from a daemon older than ABI version 4). */
static inline int ktmfs_commit_flags(int fd, const char* id, uint32_t* flags_out) {
  return ktmfs_end_(fd, KTMFS_IOC_COMMIT, id, flags_out);
}

/* Rolls back transaction `id`, or the caller's if id is NULL or empty. */
static inline int ktmfs_rollback(int fd, const char* id) {
  return ktmfs_end_(fd, KTMFS_IOC_ROLLBACK, id, NULL);
}

/* The caller's transaction id into id_out (KTMFS_ID_SIZE bytes); -ENODATA if none. */
static inline int ktmfs_current(int fd, char* id_out) {
  struct ktmfs_txid t;
  int rc;
  memset(&t, 0, sizeof t);
  rc = ktmfs_ioctl_(fd, KTMFS_IOC_QUERY, &t);
  if (rc == 0) memcpy(id_out, t.id, KTMFS_ID_SIZE);
  return rc;
}

/* The id of the transaction holding the object fd refers to; -ENODATA if none. */
static inline int ktmfs_holder(int fd, char* id_out) {
  struct ktmfs_txid t;
  int rc;
  memset(&t, 0, sizeof t);
  rc = ktmfs_ioctl_(fd, KTMFS_IOC_HOLDER, &t);
  if (rc == 0) memcpy(id_out, t.id, KTMFS_ID_SIZE);
  return rc;
}

/* Copies the reason for the caller's last failed request into text (size bytes, NUL-terminated;
 * empty if the daemon has none). 0, or a negative errno (-ENOTTY from a daemon of version 1). */
static inline int ktmfs_reason(int fd, char* text, size_t size) {
  struct ktmfs_reason_args r;
  int rc;
  if (size == 0) return -EINVAL;
  memset(&r, 0, sizeof r);
  text[0] = '\0';
  rc = ktmfs_ioctl_(fd, KTMFS_IOC_REASON, &r);
  if (rc != 0) return rc;
  {
    size_t n = strnlen(r.text, KTMFS_REASON_SIZE - 1);
    if (n > size - 1) n = size - 1;
    memcpy(text, r.text, n);
    text[n] = '\0';
  }
  return 0;
}

/* One page of the transaction table; list->start and list->capacity must be set. */
static inline int ktmfs_list_transactions(int fd, struct ktmfs_list_args* list) {
  return ktmfs_ioctl_(fd, KTMFS_IOC_LIST, list);
}

/* One page of the transactions that ended lately; recent->start and recent->capacity must be
 * set. -ENOTTY from a daemon older than ABI version 3. */
static inline int ktmfs_recent_transactions(int fd, struct ktmfs_recent_args* recent) {
  return ktmfs_ioctl_(fd, KTMFS_IOC_RECENT, recent);
}

#ifdef __cplusplus
}
#endif

#endif /* KTMFS_H */

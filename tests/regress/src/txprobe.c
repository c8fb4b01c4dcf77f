/* txprobe: what the transaction tests need that a shell cannot do, through the installed
 * ktmfs.h (written in C, so the suite also proves the header works from C):
 *
 *   txprobe threads DIR           two threads, each in its own scope=thread transaction
 *   txprobe badioctl DIR          malformed and unknown ioctl requests, errno name per request
 *   txprobe mmap-write FILE OFF TEXT   writes TEXT at OFF through a MAP_SHARED mapping, msync
 *   txprobe mmap-read FILE LEN    prints the first LEN bytes as a MAP_SHARED mapping sees them
 *   txprobe pread-fd FD LEN       prints the first LEN bytes read through inherited descriptor FD
 *   txprobe pwrite-fd FD OFF TEXT writes TEXT at OFF through inherited descriptor FD
 *   txprobe fstat-fd FD           prints size and mode of inherited descriptor FD
 *
 * Results are printed as errno names (never strerror text), so golden outputs are exact.
 * Exit status: 0, or 2 for a bad command line or a failure of the test's own set-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ktmfs.h"

static const char* err_name(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E?";
}

static void report(const char* what, int rc) { /* rc: 0 or a negative errno */
  printf("%s: %s\n", what, rc == 0 ? "OK" : err_name(-rc));
}

static void die(const char* what) {
  fprintf(stderr, "txprobe: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int open_dir(const char* dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die(dir);
  return fd;
}

/* Reads a whole small file as "CONTENT" or an errno name. */
static void read_file(const char* who, const char* path) {
  char buf[256];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    printf("%s: read %s: %s\n", who, strrchr(path, '/') + 1, err_name(errno));
    return;
  }
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int e = errno;
  close(fd);
  if (n < 0) {
    printf("%s: read %s: %s\n", who, strrchr(path, '/') + 1, err_name(e));
    return;
  }
  buf[n] = '\0';
  printf("%s: read %s: '%s'\n", who, strrchr(path, '/') + 1, buf);
}

static int write_file(const char* path, const char* text) {
  int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, text, strlen(text));
  int rc = n == (ssize_t)strlen(text) ? 0 : n < 0 ? -errno : -EIO;
  if (close(fd) != 0 && rc == 0) rc = -errno;
  return rc;
}

/* ---- threads: two scope=thread transactions in one process ------------------------------ */

/* Three actors (the main thread, A and B) take turns: each step is done by the actors it names
 * while the others wait at the barrier, so the output order is fixed. */
enum { MAIN = 0, A = 1, B = 2 };
static const char* const kActor[] = {"main", "A", "B"};
static pthread_barrier_t g_turn;
static int g_dirfd;
static char g_path_a[4096], g_path_b[4096];
static char g_id[3][KTMFS_ID_SIZE];

static void step(int who, int n) {
  const char* me = kActor[who];
  char what[64], id[KTMFS_ID_SIZE];
  switch (n) {
    case 0:
      if (who == MAIN) break;
      snprintf(what, sizeof what, "%s: begin scope=thread", me);
      report(what, ktmfs_begin(g_dirfd, KTMFS_SCOPE_THREAD, 0, 0, me, g_id[who]));
      break;
    case 1: {
      int rc = ktmfs_current(g_dirfd, id);
      snprintf(what, sizeof what, "%s: current", me);
      if (rc != 0)
        report(what, rc);
      else
        printf("%s: %s\n", what,
               !strcmp(id, g_id[A]) ? "A's" : !strcmp(id, g_id[B]) ? "B's" : "another");
      break;
    }
    case 2:
      if (who == A) report("A: write a", write_file(g_path_a, "new-a"));
      if (who == B) report("B: write b", write_file(g_path_b, "new-b"));
      break;
    case 3:
      read_file(me, g_path_a);
      read_file(me, g_path_b);
      break;
    case 4: /* a change to what the other holds: EBUSY, transacted or not */
      if (who == MAIN) report("main: truncate a", truncate(g_path_a, 0) == 0 ? 0 : -errno);
      if (who == MAIN) report("main: truncate b", truncate(g_path_b, 0) == 0 ? 0 : -errno);
      if (who == B) report("B: truncate a", truncate(g_path_a, 0) == 0 ? 0 : -errno);
      if (who == A) report("A: truncate b", truncate(g_path_b, 0) == 0 ? 0 : -errno);
      break;
    case 5:
      if (who == A) report("A: commit", ktmfs_commit(g_dirfd, NULL));
      break;
    case 6:
      if (who == B) report("B: rollback", ktmfs_rollback(g_dirfd, NULL));
      break;
    case 7:
      if (who == MAIN) break;
      snprintf(what, sizeof what, "%s: current", me);
      report(what, ktmfs_current(g_dirfd, id));
      break;
    case 8:
      read_file(me, g_path_a);
      read_file(me, g_path_b);
      break;
  }
  fflush(stdout);
}

enum { kSteps = 9 };

static void run_steps(int who) {
  for (int n = 0; n < kSteps; ++n) {
    /* The actors of one step go in order main, A, B: each waits for its predecessor. */
    for (int turn = 0; turn < 3; ++turn) {
      if (turn == who) step(who, n);
      pthread_barrier_wait(&g_turn);
    }
  }
}

static void* thread_main(void* arg) {
  run_steps((int)(intptr_t)arg);
  return NULL;
}

static int cmd_threads(const char* dir) {
  g_dirfd = open_dir(dir);
  snprintf(g_path_a, sizeof g_path_a, "%s/a", dir);
  snprintf(g_path_b, sizeof g_path_b, "%s/b", dir);
  pthread_barrier_init(&g_turn, NULL, 3);
  pthread_t ta, tb;
  if (pthread_create(&ta, NULL, thread_main, (void*)(intptr_t)A) != 0 ||
      pthread_create(&tb, NULL, thread_main, (void*)(intptr_t)B) != 0)
    die("pthread_create");
  run_steps(MAIN);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  printf("A and B had different ids: %s\n", strcmp(g_id[A], g_id[B]) != 0 ? "yes" : "no");
  close(g_dirfd);
  return 0;
}

/* ---- badioctl: what malformed requests get ----------------------------------------------- */

#define KTMFS_IOC_UNKNOWN _IOWR(KTMFS_IOC_MAGIC, 99, struct ktmfs_txid)

static int ioc(int fd, unsigned long cmd, void* arg) {
  return ioctl(fd, cmd, arg) == 0 ? 0 : -errno;
}

static void begin_case(int fd, const char* what, void (*mutate)(struct ktmfs_begin_args*)) {
  struct ktmfs_begin_args b;
  memset(&b, 0, sizeof b);
  b.scope = KTMFS_SCOPE_PROCESS;
  mutate(&b);
  int rc = ioc(fd, KTMFS_IOC_BEGIN, &b);
  report(what, rc);
  if (rc == 0) ktmfs_rollback(fd, b.id); /* a malformed begin that was accepted: undo it */
}

static void m_flags(struct ktmfs_begin_args* b) { b->flags = 1; }
static void m_scope4(struct ktmfs_begin_args* b) { b->scope = 4; }
static void m_scope_big(struct ktmfs_begin_args* b) { b->scope = 0x80000001u; }
static void m_name_unterminated(struct ktmfs_begin_args* b) { memset(b->name, 'x', sizeof b->name); }
static void m_pid_none(struct ktmfs_begin_args* b) { b->pid = 0x7ffffff0; }
static void m_pid_negative(struct ktmfs_begin_args* b) { b->pid = -1; }

static void txid_case(int fd, unsigned long cmd, const char* what, const char* id, size_t idlen,
                      uint32_t flags, uint32_t reserved) {
  struct ktmfs_txid t;
  memset(&t, 0, sizeof t);
  memcpy(t.id, id, idlen);
  t.flags = flags;
  t.reserved = reserved;
  report(what, ioc(fd, cmd, &t));
}

static int cmd_badioctl(const char* dir) {
  int fd = open_dir(dir);
  struct ktmfs_hello_args h;
  memset(&h, 0, sizeof h);
  int rc = ktmfs_hello(fd, &h);
  report("hello", rc);
  if (rc == 0) printf("hello: abi %u\n", h.abi_version);

  begin_case(fd, "begin flags=1", m_flags);
  begin_case(fd, "begin scope=4", m_scope4);
  begin_case(fd, "begin scope=0x80000001", m_scope_big);
  begin_case(fd, "begin name without NUL", m_name_unterminated);
  begin_case(fd, "begin pid of no process", m_pid_none);
  begin_case(fd, "begin pid=-1", m_pid_negative);

  static const char kUnknown[] = "00000000-0000-4000-8000-000000000000";
  static const char kMalformed[] = "not-a-transaction-id-at-all-00000000";
  char unterminated[KTMFS_ID_SIZE];
  memset(unterminated, 'a', sizeof unterminated);
  txid_case(fd, KTMFS_IOC_COMMIT, "commit, nothing bound", "", 0, 0, 0);
  txid_case(fd, KTMFS_IOC_ROLLBACK, "rollback, nothing bound", "", 0, 0, 0);
  txid_case(fd, KTMFS_IOC_QUERY, "query, nothing bound", "", 0, 0, 0);
  txid_case(fd, KTMFS_IOC_HOLDER, "holder of an object nobody holds", "", 0, 0, 0);
  txid_case(fd, KTMFS_IOC_COMMIT, "commit unknown id", kUnknown, sizeof kUnknown, 0, 0);
  txid_case(fd, KTMFS_IOC_ROLLBACK, "rollback unknown id", kUnknown, sizeof kUnknown, 0, 0);
  txid_case(fd, KTMFS_IOC_COMMIT, "commit malformed id", kMalformed, sizeof kMalformed, 0, 0);
  txid_case(fd, KTMFS_IOC_COMMIT, "commit id without NUL", unterminated, sizeof unterminated, 0,
            0);
  txid_case(fd, KTMFS_IOC_COMMIT, "commit flags=1", kUnknown, sizeof kUnknown, 1, 0);
  txid_case(fd, KTMFS_IOC_ROLLBACK, "rollback reserved=1", kUnknown, sizeof kUnknown, 0, 1);
  txid_case(fd, KTMFS_IOC_QUERY, "query flags=1", "", 0, 1, 0);
  txid_case(fd, KTMFS_IOC_UNKNOWN, "unknown ioctl number", "", 0, 0, 0);

  static struct ktmfs_list_args list;
  memset(&list, 0, sizeof list);
  list.capacity = KTMFS_LIST_MAX + 1;
  report("list capacity=KTMFS_LIST_MAX+1", ioc(fd, KTMFS_IOC_LIST, &list));
  memset(&list, 0, sizeof list);
  list.start = 1000000;
  list.capacity = KTMFS_LIST_MAX;
  rc = ioc(fd, KTMFS_IOC_LIST, &list);
  report("list start=1000000", rc);
  if (rc == 0) printf("list start=1000000: count %u\n", list.count);

  /* After all that, the daemon still serves a well-formed transaction. */
  char id[KTMFS_ID_SIZE];
  report("begin (well-formed)", ktmfs_begin(fd, KTMFS_SCOPE_PROCESS, 0, 0, "probe", id));
  report("begin again while bound", ktmfs_begin(fd, KTMFS_SCOPE_PROCESS, 0, 0, "", NULL));
  char cur[KTMFS_ID_SIZE];
  rc = ktmfs_current(fd, cur);
  report("query", rc);
  if (rc == 0) printf("query: %s\n", !strcmp(cur, id) ? "the new transaction" : "ANOTHER ID");
  report("commit", ktmfs_commit(fd, NULL));
  report("query after commit", ktmfs_current(fd, cur));
  close(fd);
  return 0;
}

/* ---- mmap and inherited descriptors ------------------------------------------------------ */

static int cmd_mmap_write(const char* path, long off, const char* text) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    printf("mmap-write: open: %s\n", err_name(errno));
    return 0;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  size_t len = strlen(text);
  if ((off_t)(off + (long)len) > st.st_size) {
    fprintf(stderr, "txprobe: mmap-write past the end of %s\n", path);
    return 2;
  }
  char* p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    printf("mmap-write: mmap: %s\n", err_name(errno));
    close(fd);
    return 0;
  }
  memcpy(p + off, text, len);
  report("mmap-write: msync", msync(p, (size_t)st.st_size, MS_SYNC) == 0 ? 0 : -errno);
  munmap(p, (size_t)st.st_size);
  report("mmap-write: close", close(fd) == 0 ? 0 : -errno);
  return 0;
}

static void print_bytes(const char* what, const char* p, size_t n) {
  printf("%s: '", what);
  for (size_t i = 0; i < n; ++i)
    putchar(p[i] >= 32 && p[i] < 127 ? p[i] : '.');
  printf("'\n");
}

static int cmd_mmap_read(const char* path, size_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    printf("mmap-read: open: %s\n", err_name(errno));
    return 0;
  }
  char* p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    printf("mmap-read: mmap: %s\n", err_name(errno));
  } else {
    print_bytes("mmap-read", p, len);
    munmap(p, len);
  }
  close(fd);
  return 0;
}

static int cmd_pread_fd(int fd, size_t len) {
  char* buf = malloc(len);
  if (!buf) die("malloc");
  ssize_t n = pread(fd, buf, len, 0);
  if (n < 0)
    printf("pread: %s\n", err_name(errno));
  else
    print_bytes("pread", buf, (size_t)n);
  free(buf);
  return 0;
}

static int cmd_pwrite_fd(int fd, long off, const char* text) {
  ssize_t n = pwrite(fd, text, strlen(text), off);
  if (n < 0)
    printf("pwrite: %s\n", err_name(errno));
  else
    printf("pwrite: %zd\n", n);
  return 0;
}

static int cmd_fstat_fd(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    printf("fstat: %s\n", err_name(errno));
  else
    printf("fstat: size %lld mode %04o\n", (long long)st.st_size, (unsigned)(st.st_mode & 07777));
  return 0;
}

static long number(const char* s) {
  char* end;
  errno = 0;
  long v = strtol(s, &end, 0);
  if (errno || end == s || *end) {
    fprintf(stderr, "txprobe: not a number: %s\n", s);
    exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 3 && !strcmp(argv[1], "threads")) return cmd_threads(argv[2]);
  if (argc == 3 && !strcmp(argv[1], "badioctl")) return cmd_badioctl(argv[2]);
  if (argc == 5 && !strcmp(argv[1], "mmap-write"))
    return cmd_mmap_write(argv[2], number(argv[3]), argv[4]);
  if (argc == 4 && !strcmp(argv[1], "mmap-read"))
    return cmd_mmap_read(argv[2], (size_t)number(argv[3]));
  if (argc == 4 && !strcmp(argv[1], "pread-fd"))
    return cmd_pread_fd((int)number(argv[2]), (size_t)number(argv[3]));
  if (argc == 5 && !strcmp(argv[1], "pwrite-fd"))
    return cmd_pwrite_fd((int)number(argv[2]), number(argv[3]), argv[4]);
  if (argc == 3 && !strcmp(argv[1], "fstat-fd")) return cmd_fstat_fd((int)number(argv[2]));
  fprintf(stderr, "txprobe: bad command line (see the comment at the top of txprobe.c)\n");
  return 2;
}

#!/usr/bin/env python3
"""Random control requests against a ktmfs mount, as security/005 sends them.

    ctlfuzz.py [--seed N] [--count N] [--workers N] [--foreign-pid PID] [--ro PATH]... PATH...

Workers (forked processes, each with its own seed derived from --seed) send --count requests in
all: ioctls of ktmfs's magic with random numbers, directions and sizes, well-formed ktmfs
commands with random fields (flags, scopes, pids, names, ids taken from the transaction list or
made up), virtual xattr sets and gets with random names and values under "user.ktmfs.",
begin/commit/rollback/query in any order, a few writes, and now and then a child that begins a
transaction and exits without ending it. Paths are files and directories the caller may write;
--ro ones it may only read.

Each answer is checked against what the request deserves whatever the state: a number that is
not one of ktmfs's commands gets ENOTTY, a malformed ktmfs command EINVAL, a reserved xattr name
EPERM or ENODATA, and nothing ever gets an errno that says the daemon is gone or broken
(ENOTCONN, ECONNABORTED, ENOSYS, EIO). Prints nothing and exits 0 if every answer was right;
otherwise prints the seed, the request and the answer of the first few that were not, exits 1.
"""
import argparse
import ctypes
import errno
import os
import random
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.fsetxattr.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_int]
libc.fgetxattr.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.fgetxattr.restype = ctypes.c_ssize_t

# tools/ktmfs.h
MAGIC = 0xCE
ID_SIZE, NAME_SIZE, LIST_MAX = 40, 128, 64
HELLO_SIZE = 32
BEGIN_SIZE = 16 + NAME_SIZE + ID_SIZE
TXID_SIZE = ID_SIZE + 8
TX_INFO_SIZE = 152
LIST_SIZE = 16 + LIST_MAX * TX_INFO_SIZE
REASON_SIZE = 8 + 512  # struct ktmfs_reason_args
RECENT_SIZE = 16 + 32 * 264  # struct ktmfs_recent_args: KTMFS_RECENT_MAX ktmfs_ended_info
IOC_READ, IOC_WRITE = 2, 1


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


COMMANDS = {
    "hello": (0, HELLO_SIZE),
    "begin": (1, BEGIN_SIZE),
    "commit": (2, TXID_SIZE),
    "rollback": (3, TXID_SIZE),
    "query": (4, TXID_SIZE),
    "holder": (5, TXID_SIZE),
    "list": (6, LIST_SIZE),
    "reason": (7, REASON_SIZE),
    "recent": (8, RECENT_SIZE),
}
CMD_NUMBERS = {ioc(IOC_READ | IOC_WRITE, nr, size): name for name, (nr, size) in COMMANDS.items()}

XATTR_SET = (b"user.ktmfs.tx.begin", b"user.ktmfs.tx.commit", b"user.ktmfs.tx.rollback")
XATTR_GET = (b"user.ktmfs.tx", b"user.ktmfs.tx.holder")
# The daemon is gone, or turned a request into an error it should never give.
FATAL = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENOSYS, errno.EIO}


class Worker:
    def __init__(self, seed, rw, ro, foreign_pid):
        self.seed = seed
        self.rng = random.Random(seed)
        self.fds = []  # (fd, writable, path)
        for paths, writable in ((rw, True), (ro, False)):
            for p in paths:
                self.fds.append((os.open(p, os.O_RDONLY), writable, p))
        self.files = [p for p in rw if os.path.isfile(p)]
        # Known before any transaction: which descriptors are of files (see get_xattr).
        self.file_fds = {fd for fd, _, p in self.fds if os.path.isfile(p)}
        self.ids = set()  # ids seen in answers and lists
        self.foreign_pid = foreign_pid
        self.bad = []
        self.answers = {}  # "request kind: errno name" -> count, for --stats

    # ---- random pieces ----

    def blob(self, n):
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def text_id(self):
        r = self.rng.random()
        if r < 0.3 or not self.ids:
            return b""
        if r < 0.7:
            return self.rng.choice(sorted(self.ids))
        if r < 0.8:
            return b"%08x-%04x-4%03x-8%03x-%012x" % tuple(
                self.rng.getrandbits(b) for b in (32, 16, 12, 12, 48))
        if r < 0.9:
            return self.rng.choice(sorted(self.ids)).upper()
        return self.blob(self.rng.randrange(ID_SIZE + 1)).replace(b"\0", b"x")

    def pid(self):
        return self.rng.choice([0, 0, 0, os.getpid(), os.getppid(), 1, self.foreign_pid, -1,
                                self.rng.randrange(2, 1 << 22), 0x7FFFFFFF, -0x80000000])

    def begin_value(self):
        r = self.rng.random()
        if r < 0.2:
            return self.blob(self.rng.randrange(64))
        words = []
        for _ in range(self.rng.randrange(5)):
            key = self.rng.choice([b"scope", b"pid", b"timeout", b"name", b"colour", b""])
            value = self.rng.choice([
                b"thread", b"process", b"tree", b"forest", b"%d" % self.pid(), b"1", b"2",
                b"4294967295", b"4294967296", b"0", b"\"a b\\\" c\"", b"\"open", b"",
                b"x" * self.rng.choice([1, 127, 128, 300])])
            words.append(key + b"=" + value)
        v = self.rng.choice([b" ", b"  ", b"\t"]).join(words)
        return v + self.rng.choice([b"", b"\n", b"\0", b"\n\0"])

    # ---- requests ----

    def check(self, what, err, allowed):
        key = "%s: %s" % (" ".join(what.split()[:2]), errno.errorcode.get(err, err) if err else "OK")
        self.answers[key] = self.answers.get(key, 0) + 1
        if err in FATAL or (allowed is not None and err not in allowed):
            self.bad.append("%s: %s" % (what, errno.errorcode.get(err, err) if err else "OK"))

    def raw_ioctl(self, fd, cmd, buf):
        res = libc.ioctl(fd, cmd, buf)
        return 0 if res == 0 else ctypes.get_errno()

    def well_formed(self, fd, on):
        name = self.rng.choice(list(COMMANDS))
        nr, size = COMMANDS[name]
        buf = ctypes.create_string_buffer(self.blob(size) if self.rng.random() < 0.1 else size)
        malformed = False
        if name == "begin":
            scope = self.rng.choice([0, 1, 2, 3, 3, 4, 0xFFFFFFFF])
            pid = self.pid()
            timeout = self.rng.choice([0, 0, 1, 2, 0xFFFFFFFF])
            flags = 0 if self.rng.random() < 0.9 else self.rng.getrandbits(32)
            n = self.rng.choice([0, 5, NAME_SIZE - 1, NAME_SIZE])
            label = self.blob(n).replace(b"\0", b"n")
            struct.pack_into("<IiII", buf, 0, scope, pid, timeout, flags)
            ctypes.memmove(ctypes.addressof(buf) + 16, label, n)
            if n < NAME_SIZE:
                buf[16 + n] = b"\0"
            malformed = flags != 0 or scope > 3 or pid < 0 or n == NAME_SIZE
        elif name in ("commit", "rollback", "query", "holder"):
            tid = self.text_id() if name in ("commit", "rollback") else b""
            flags = 0 if self.rng.random() < 0.9 else self.rng.getrandbits(32)
            reserved = 0 if self.rng.random() < 0.9 else self.rng.getrandbits(32)
            ctypes.memmove(buf, tid, len(tid))
            if len(tid) < ID_SIZE:
                buf[len(tid)] = b"\0"
            struct.pack_into("<II", buf, ID_SIZE, flags, reserved)
            malformed = flags != 0 or reserved != 0
            if name in ("commit", "rollback") and tid:
                malformed = malformed or not self.is_guid(tid)
        elif name == "list":
            start = self.rng.choice([0, 0, 1, 5, 0xFFFFFFFF])
            capacity = self.rng.choice([0, 1, LIST_MAX, LIST_MAX, LIST_MAX + 1, 0xFFFFFFFF])
            struct.pack_into("<II", buf, 0, start, capacity)
            malformed = capacity > LIST_MAX
        err = self.raw_ioctl(fd, ioc(IOC_READ | IOC_WRITE, nr, size), buf)
        if err == 0:
            self.learn(name, buf.raw)
        what = "ioctl %s on %s (%s)" % (name, on, buf.raw[:24].hex())
        if malformed:
            self.check(what, err, {errno.EINVAL})
        elif name in ("hello", "list"):
            self.check(what, err, {0})
        elif name in ("query", "holder"):
            self.check(what, err, {0, errno.ENODATA})
        else:
            self.check(what, err, None)

    def is_guid(self, tid):
        parts = tid.split(b"-")
        return (len(tid) == 36 and [len(p) for p in parts] == [8, 4, 4, 4, 12] and
                all(c in b"0123456789abcdefABCDEF" for c in b"".join(parts)))

    def learn(self, name, raw):
        if name in ("begin", "query", "holder"):
            off = 16 + NAME_SIZE if name == "begin" else 0
            tid = raw[off:off + ID_SIZE].split(b"\0")[0]
            if tid:
                self.ids.add(tid)
        elif name == "list":
            count = struct.unpack_from("<I", raw, 8)[0]
            for i in range(min(count, LIST_MAX)):
                tid = raw[16 + i * TX_INFO_SIZE:16 + i * TX_INFO_SIZE + ID_SIZE].split(b"\0")[0]
                if tid:
                    self.ids.add(tid)

    def random_ioctl(self, fd, on):
        direction = self.rng.randrange(4)
        nr = self.rng.choice([self.rng.randrange(len(COMMANDS)), self.rng.randrange(256)])
        size = self.rng.choice([0, HELLO_SIZE, BEGIN_SIZE, TXID_SIZE, LIST_SIZE, RECENT_SIZE,
                                self.rng.randrange(1, 64), self.rng.randrange(1 << 14)])
        if self.rng.random() < 0.3:
            size = max(0, min((1 << 14) - 1, size + self.rng.choice([-1, 1, 8, -8])))
        cmd = ioc(direction, nr, size)
        null = self.rng.random() < 0.05 and size > 0
        buf = None if null else ctypes.create_string_buffer(self.blob(size), max(size, 1))
        err = self.raw_ioctl(fd, cmd, buf)
        what = "ioctl 0x%08x on %s%s" % (cmd, on, " (NULL)" if null else "")
        if null and direction & IOC_WRITE:
            self.check(what, err, {errno.EFAULT})  # the kernel cannot copy the argument in
        elif cmd not in CMD_NUMBERS:
            self.check(what, err, {errno.ENOTTY})
        else:
            self.check(what, err, None)

    def set_xattr(self, fd, writable, on):
        r = self.rng.random()
        if r < 0.5:
            name = self.rng.choice(XATTR_SET)
        elif r < 0.6:
            name = self.rng.choice(XATTR_GET)
        else:
            name = b"user.ktmfs." + self.blob(self.rng.randrange(40)).replace(b"\0", b".")
        value = self.begin_value() if name == XATTR_SET[0] else self.blob(self.rng.randrange(16))
        if self.rng.random() < 0.02:
            value = self.blob(self.rng.choice([4096, 65536]))
        flags = self.rng.choice([0, 0, 0, 1, 2, 3])  # XATTR_CREATE, XATTR_REPLACE, both
        res = libc.fsetxattr(fd, name, value, len(value), flags)
        err = 0 if res == 0 else ctypes.get_errno()
        what = "setxattr %r=%r on %s" % (name, value[:40], on)
        # The kernel checks write permission on a user.* set as it checks read permission on a
        # get, so the descriptor of a file the worker's transaction changed can get ESTALE here
        # for the same reason (see get_xattr). The read-only files it cannot change.
        stale = {errno.ESTALE} if fd in self.file_fds and writable else set()
        if not writable:
            self.check(what, err, {errno.EACCES, errno.EPERM})
        elif name not in XATTR_SET:
            self.check(what, err, {errno.EPERM} | stale)
        elif name == XATTR_SET[0] and len(value) > 1024:
            self.check(what, err, {errno.EINVAL} | stale)
        else:
            self.check(what, err, None)

    def get_xattr(self, fd, on):
        r = self.rng.random()
        if r < 0.6:
            name = self.rng.choice(XATTR_GET)
        elif r < 0.7:
            name = self.rng.choice(XATTR_SET)
        else:
            name = b"user.ktmfs." + self.blob(self.rng.randrange(40)).replace(b"\0", b".")
        size = self.rng.choice([0, 1, 35, 36, 37, 4096])
        buf = ctypes.create_string_buffer(max(size, 1))
        res = libc.fgetxattr(fd, name, buf, size)
        err = 0 if res >= 0 else ctypes.get_errno()
        if res > 0 and size >= res:
            self.ids.add(buf.raw[:res])
        what = "getxattr %r (size %d) on %s" % (name, size, on)
        # A user.* getxattr makes the kernel check read permission, refreshing the file's
        # attributes once they have expired; a worker inside a transaction that changed the
        # file reaches it here through a descriptor opened outside, and that refresh gets ESTALE
        # (ktmfs-tx(7), Descriptors). It depends on the attribute timeout, not on the request.
        stale = {errno.ESTALE} if fd in self.file_fds else set()
        if name not in XATTR_GET:
            self.check(what, err, {errno.ENODATA} | stale)
        elif size in (0, 36, 37, 4096):
            self.check(what, err, {0, errno.ENODATA} | stale)
        else:
            self.check(what, err, {errno.ERANGE, errno.ENODATA} | stale)

    def end_own(self, fd, on):
        commit = self.rng.random() < 0.5
        if self.rng.random() < 0.5:
            name = XATTR_SET[1] if commit else XATTR_SET[2]
            res = libc.fsetxattr(fd, name, b"", 0, 0)
            err = 0 if res == 0 else ctypes.get_errno()
        else:
            buf = ctypes.create_string_buffer(TXID_SIZE)
            err = self.raw_ioctl(fd, ioc(IOC_READ | IOC_WRITE, 2 if commit else 3, TXID_SIZE), buf)
        self.check("%s own on %s" % ("commit" if commit else "rollback", on), err, None)

    def write(self):
        if not self.files:
            return
        path = self.rng.choice(self.files)
        try:
            with open(path, "r+b", buffering=0) as f:
                f.seek(self.rng.randrange(4096))
                f.write(self.blob(self.rng.randrange(1, 64)))
        except OSError as e:
            self.check("write %s" % path, e.errno, {errno.EBUSY})

    def orphan(self):
        # A child that begins a transaction and exits without ending it: the daemon rolls it back.
        pid = os.fork()
        if pid == 0:
            fd, _, _ = self.rng.choice(self.fds)
            buf = ctypes.create_string_buffer(BEGIN_SIZE)
            struct.pack_into("<IiII", buf, 0, self.rng.choice([1, 2, 3]), 0, 0, 0)
            libc.ioctl(fd, ioc(IOC_READ | IOC_WRITE, 1, BEGIN_SIZE), buf)
            os._exit(0)
        os.waitpid(pid, 0)

    def run(self, count):
        for i in range(count):
            fd, writable, path = self.rng.choice(self.fds)
            on = os.path.basename(path)
            r = self.rng.random()
            if r < 0.30:
                self.well_formed(fd, on)
            elif r < 0.55:
                self.random_ioctl(fd, on)
            elif r < 0.75:
                self.set_xattr(fd, writable, on)
            elif r < 0.90:
                self.get_xattr(fd, on)
            elif r < 0.96:
                self.end_own(fd, on)
            elif r < 0.995:
                self.write()
            else:
                self.orphan()
            if len(self.bad) >= 5:
                break
        return self.bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--foreign-pid", type=int, default=1)
    ap.add_argument("--ro", action="append", default=[])
    ap.add_argument("--stats", action="store_true", help="print the answers' counts on stderr")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    rw, ro = args.paths, args.ro
    children = []
    for k in range(args.workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            seed = args.seed * 1000 + k
            worker = Worker(seed, rw, ro, args.foreign_pid)
            bad = worker.run(args.count // args.workers)
            if args.stats:
                for key, n in sorted(worker.answers.items()):
                    sys.stderr.write("worker %d: %6d %s\n" % (k, n, key))
            with os.fdopen(w, "w") as out:
                for b in bad:
                    out.write("seed %d worker %d: %s\n" % (args.seed, k, b))
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    failed = False
    for pid, r in children:
        with os.fdopen(r) as f:
            report = f.read()
        _, status = os.waitpid(pid, 0)
        if report or status != 0:
            failed = True
            sys.stdout.write(report)
            if status != 0:
                print("seed %d: a worker ended with status %d" % (args.seed, status))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

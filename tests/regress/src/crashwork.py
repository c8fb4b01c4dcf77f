#!/usr/bin/env python3
"""crashwork: a randomized crash test of ktmfs transactions, checked against a model.

    crashwork.py --ktmfs DAEMON --backing DIR --mnt DIR [--two] [--recovery-kills]
                 [--workers N] [--seed N] [--iterations N] [--log FILE] [--daemon-log FILE]
                 [--pidfile FILE]

Each iteration mounts ktmfs (which runs recovery), checks the tree against the model, then lets a
worker process run a planned series of transactions (several random operations on several files,
then a commit or, sometimes, a rollback) while this process SIGKILLs the daemon at a randomly
chosen moment: during the operations of a transaction, while its commit is in flight (after a
random delay, or right after the daemon's first, second or third write into the log since the
commit began, seen with inotify), shortly after a commit was acknowledged, or when the worker is
idle. With --recovery-kills it then also
kills the daemon while it recovers (right after starting it), once or twice, before the next
iteration mounts again.

The oracle: after each remount the tree must equal the model after the last acknowledged commit
(a commit call that returned success), or, if a commit was in flight at the kill, the model with
that transaction wholly applied. Nothing else may differ: names, types, modes, sizes, contents,
symlink targets and user xattrs are compared. At the end the daemon is unmounted cleanly and the
backing directories themselves must hold the model.

--two mounts two backing directories as named sources (data=DIR/a:conf=DIR/b); the transactions
touch both, so their commits go through two-phase commit, and the kills land between prepare and
decision as well.

--workers N runs N worker processes at once, each in its own subdirectory (wI, under every
source) with its own plan and model, so that their commits share log flushes; each worker's part
of the tree is checked on its own (its acknowledged commits, its one commit in flight).

The workload depends only on the seed; the kill moments depend on the seed and on timing. Every
iteration's seed, plan and verdict go to the log; stdout gets one summary line, or what failed.
Exit status: 0 all matched, 1 a mismatch or a daemon failure, 2 bad usage.
"""

import argparse
import ctypes
import errno
import fcntl
import hashlib
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

from fuse_mounts import abort_connection, mount_device, mounted

# ---- The control interface (tools/ktmfs.h) ------------------------------------------------------

XATTR_BEGIN = "user.ktmfs.tx.begin"
XATTR_COMMIT = "user.ktmfs.tx.commit"
XATTR_ROLLBACK = "user.ktmfs.tx.rollback"
ID_SIZE = 40
NAME_SIZE = 128


def _iowr(nr, size):
    return (3 << 30) | (size << 16) | (0xCE << 8) | nr


BEGIN_ARGS = struct.Struct(f"=IiII{NAME_SIZE}s{ID_SIZE}s")  # struct ktmfs_begin_args
TXID = struct.Struct(f"={ID_SIZE}sII")  # struct ktmfs_txid
IOC_BEGIN = _iowr(1, BEGIN_ARGS.size)
IOC_COMMIT = _iowr(2, TXID.size)
IOC_ROLLBACK = _iowr(3, TXID.size)


def tx_call(path, what, via_ioctl):
    """Begin, commit or roll back the caller's transaction through PATH; raises OSError."""
    if not via_ioctl:
        name = {"begin": XATTR_BEGIN, "commit": XATTR_COMMIT, "rollback": XATTR_ROLLBACK}[what]
        os.setxattr(path, name, b"scope=process name=crashwork" if what == "begin" else b"1")
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if what == "begin":
            buf = bytearray(BEGIN_ARGS.pack(2, 0, 0, 0, b"crashwork", b""))
            fcntl.ioctl(fd, IOC_BEGIN, buf)
        else:
            buf = bytearray(TXID.pack(b"", 0, 0))
            fcntl.ioctl(fd, IOC_COMMIT if what == "commit" else IOC_ROLLBACK, buf)
    finally:
        os.close(fd)


# ---- The model --------------------------------------------------------------------------------
# A tree is a dict: relative path ('/'-separated) -> entry tuple:
#   ("f", mode, data bytes, xattrs as a sorted tuple of (name, value))
#   ("d", mode)
#   ("l", target)
# The roots (the mount root, or the named sources' top directories) are not in it.

FILE_NAMES = [f"f{i}" for i in range(8)]
DIR_NAMES = [f"d{i}" for i in range(4)]
LINK_NAMES = [f"l{i}" for i in range(3)]
FILE_MODES = [0o644, 0o600, 0o640, 0o755, 0o444]
DIR_MODES = [0o755, 0o700, 0o750, 0o711]  # the owner keeps rwx, so the checker can walk in
XATTR_NAMES = ["user.crash.a", "user.crash.b"]
MAX_DEPTH = 4


def join(parent, name):
    return f"{parent}/{name}" if parent and name else parent or name


def depth(path):
    return path.count("/") + 1


def describe(entry):
    if entry is None:
        return "absent"
    if entry[0] == "f":
        sha = hashlib.sha256(entry[2]).hexdigest()[:12]
        xa = ",".join(f"{n[len('user.'):]}={hashlib.sha256(v).hexdigest()[:6]}/{len(v)}"
                      for n, v in entry[3])
        return f"file mode {entry[1]:o} size {len(entry[2])} sha {sha}" + (f" xattrs {xa}" if xa else "")
    if entry[0] == "d":
        return f"dir mode {entry[1]:o}"
    if entry[0] == "l":
        return f"symlink -> {entry[1]}"
    return f"other ({entry[1]})"


def tree_diff(expected, got, limit=12):
    """Lines naming each path whose entry differs; empty if the trees are equal."""
    lines = []
    for path in sorted(set(expected) | set(got)):
        e, g = expected.get(path), got.get(path)
        if e != g:
            lines.append(f"  {path}: expected {describe(e)}; the tree has {describe(g)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return lines


# ---- The workload generator -------------------------------------------------------------------


class Generator:
    """Plans random operations that are valid on the model, applying them to it as it goes."""

    def __init__(self, rng, roots, xattrs, skip=()):
        self.rng = rng
        self.skip = set(skip)  # operation kinds left out (by hand, to look past a known bug)
        # The directories this generator works below, one per source: [""] for the root of a
        # single source, ["data", "conf"] for two, ["w1"] or ["data/w1", "conf/w1"] for worker 1
        # of several.
        self.roots = roots
        self.xattrs = xattrs
        self.base = depth(roots[0]) if roots[0] else 0

    def root_of(self, path):
        for r in self.roots:
            if r == "" or path == r or path.startswith(r + "/"):
                return r
        raise AssertionError(path)

    def dirs(self, tree, max_depth=MAX_DEPTH - 1):
        ds = [r for r in self.roots]
        ds += [p for p, e in tree.items() if e[0] == "d" and depth(p) <= max_depth + self.base]
        return sorted(ds)

    def of_type(self, tree, types):
        return sorted(p for p, e in tree.items() if e[0] in types)

    def free_name(self, tree, parent, names):
        free = [n for n in names if join(parent, n) not in tree]
        return join(parent, self.rng.choice(free)) if free else None

    def content(self, size_hint=None):
        r = self.rng
        size = size_hint if size_hint is not None else r.choice(
            [0, r.randint(1, 600), r.randint(1, 8192), r.randint(8192, 70000)])
        if r.random() < 0.3:  # compressible, as real files often are
            return bytes([r.randint(0, 255)]) * size
        return r.randbytes(size)

    def plan_op(self, tree):
        """Returns (op tuple, new tree) or None if the chosen kind does not apply now."""
        r = self.rng
        kinds = ["create"] * 4 + ["write"] * 3 + ["append"] * 2 + ["truncate"] * 2 + [
            "unlink", "rename", "renamedir", "mkdir", "mkdir", "rmdir", "symlink", "chmod"]
        if self.xattrs:
            kinds += ["setxattr", "removexattr"]
        kinds = [k for k in kinds if k not in self.skip] or ["create"]
        kind = r.choice(kinds)
        files = self.of_type(tree, "f")
        t = dict(tree)
        if kind == "create":
            path = self.free_name(tree, r.choice(self.dirs(tree)), FILE_NAMES)
            if path is None:
                return None
            data = self.content()
            t[path] = ("f", 0o644, data, ())
            return ("create", path, data), t
        if kind in ("write", "append", "truncate", "setxattr", "removexattr"):
            if not files:
                return None
            path = r.choice(files)
            _, mode, data, xattrs = tree[path]
            if kind == "write":
                off = r.randint(0, len(data) + 4096)
                buf = self.content(r.choice([r.randint(1, 512), r.randint(1, 16384)]))
                new = data[:off].ljust(off, b"\0") + buf + data[off + len(buf):]
                t[path] = ("f", mode, new, xattrs)
                return ("write", path, off, buf), t
            if kind == "append":
                buf = self.content(r.randint(1, 9000))
                t[path] = ("f", mode, data + buf, xattrs)
                return ("append", path, buf), t
            if kind == "truncate":
                size = r.choice([0, r.randint(0, len(data) + 1), r.randint(0, 2 * len(data) + 5000)])
                t[path] = ("f", mode, data[:size].ljust(size, b"\0"), xattrs)
                return ("truncate", path, size), t
            xa = dict(xattrs)
            if kind == "setxattr":
                name, value = r.choice(XATTR_NAMES), r.randbytes(r.randint(1, 64))
                xa[name] = value
                t[path] = ("f", mode, data, tuple(sorted(xa.items())))
                return ("setxattr", path, name, value), t
            if not xa:
                return None
            name = r.choice(sorted(xa))
            del xa[name]
            t[path] = ("f", mode, data, tuple(sorted(xa.items())))
            return ("removexattr", path, name), t
        if kind == "unlink":
            victims = self.of_type(tree, "fl")
            if not victims:
                return None
            path = r.choice(victims)
            del t[path]
            return ("unlink", path), t
        if kind == "rename":  # a file or symlink, to a free name or over another file
            srcs = self.of_type(tree, "fl")
            if not srcs:
                return None
            src = r.choice(srcs)
            root = self.root_of(src)
            if r.random() < 0.3:
                dsts = [p for p in self.of_type(tree, "fl") if p != src and self.root_of(p) == root]
                if not dsts:
                    return None
                dst = r.choice(dsts)
            else:
                parents = [d for d in self.dirs(tree) if self.root_of(d) == root or d == root]
                names = FILE_NAMES if tree[src][0] == "f" else LINK_NAMES
                dst = self.free_name(tree, r.choice(parents), names)
                if dst is None:
                    return None
            t[dst] = t.pop(src)
            return ("rename", src, dst), t
        if kind == "renamedir":  # a whole directory, to a free name or over an empty directory
            srcs = self.of_type(tree, "d")
            if not srcs:
                return None
            src = r.choice(srcs)
            root = self.root_of(src)
            sub = [p for p in tree if p.startswith(src + "/")]
            height = max([depth(p) for p in sub], default=depth(src)) - depth(src)
            parents = [d for d in self.dirs(tree, MAX_DEPTH - 1 - height)
                       if (self.root_of(d) == root or d == root)
                       and d != src and not d.startswith(src + "/")]
            if not parents:
                return None
            parent = r.choice(parents)
            empties = [join(parent, n) for n in DIR_NAMES if join(parent, n) in tree
                       and tree[join(parent, n)][0] == "d" and join(parent, n) != src
                       and not any(p.startswith(join(parent, n) + "/") for p in tree)]
            if empties and r.random() < 0.3:
                dst = r.choice(empties)
            else:
                dst = self.free_name(tree, parent, DIR_NAMES)
                if dst is None:
                    return None
            t.pop(dst, None)
            for p in [src] + sub:
                t[dst + p[len(src):]] = t.pop(p)
            return ("rename", src, dst), t
        if kind == "mkdir":
            path = self.free_name(tree, r.choice(self.dirs(tree)), DIR_NAMES)
            if path is None:
                return None
            t[path] = ("d", 0o755)
            return ("mkdir", path), t
        if kind == "rmdir":
            empties = [p for p in self.of_type(tree, "d")
                       if not any(q.startswith(p + "/") for q in tree)]
            if not empties:
                return None
            path = r.choice(empties)
            del t[path]
            return ("rmdir", path), t
        if kind == "symlink":
            path = self.free_name(tree, r.choice(self.dirs(tree)), LINK_NAMES)
            if path is None:
                return None
            target = r.choice(["f0", "../f1", "d0/f2", "nowhere", "/tmp/ktmfs-crash-" + "x" * r.randint(1, 40)])
            t[path] = ("l", target)
            return ("symlink", path, target), t
        if kind == "chmod":
            objs = self.of_type(tree, "fd")
            if not objs:
                return None
            path = r.choice(objs)
            e = tree[path]
            mode = r.choice(FILE_MODES if e[0] == "f" else DIR_MODES)
            t[path] = (e[0], mode) + e[2:]
            return ("chmod", path, mode), t
        raise AssertionError(kind)

    def plan_transaction(self, tree):
        """(ops, tree after, commit?, via ioctl?)"""
        r = self.rng
        ops = []
        want = r.randint(1, 8)
        attempts = 0
        while len(ops) < want and attempts < 100:
            attempts += 1
            planned = self.plan_op(tree)
            if planned:
                op, tree = planned
                ops.append(op)
        # With several sources, most transactions touch all of them, so that their commit is a
        # two-phase one.
        missing = set(self.roots) - {self.root_of(op[1]) for op in ops}
        attempts = 0
        while len(self.roots) > 1 and missing and attempts < 100 and r.random() < 0.9:
            attempts += 1
            planned = self.plan_op(tree)
            if planned and self.root_of(planned[0][1]) in missing:
                op, tree = planned
                ops.append(op)
                missing.discard(self.root_of(op[1]))
        return ops, tree, r.random() >= 0.15, r.random() < 0.5


def op_text(op):
    args = []
    for a in op[1:]:
        if isinstance(a, bytes):
            args.append(f"<{len(a)} bytes>")
        elif isinstance(a, int) and op[0] == "chmod":
            args.append(f"{a:o}")
        else:
            args.append(str(a))
    return " ".join([op[0]] + args)


# ---- Running operations (in the worker) -------------------------------------------------------


def run_op(mnt, op):
    kind, path = op[0], os.path.join(mnt, op[1])
    if kind == "create":
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            write_all(fd, op[2], 0)
        finally:
            os.close(fd)
    elif kind == "write":
        fd = os.open(path, os.O_WRONLY)
        try:
            write_all(fd, op[3], op[2])
        finally:
            os.close(fd)
    elif kind == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            write_all(fd, op[2], None)
        finally:
            os.close(fd)
    elif kind == "truncate":
        os.truncate(path, op[2])
    elif kind == "unlink":
        os.unlink(path)
    elif kind == "rename":
        os.rename(path, os.path.join(mnt, op[2]))
    elif kind == "mkdir":
        os.mkdir(path, 0o755)
    elif kind == "rmdir":
        os.rmdir(path)
    elif kind == "symlink":
        os.symlink(op[2], path)
    elif kind == "chmod":
        os.chmod(path, op[2])
    elif kind == "setxattr":
        os.setxattr(path, op[2], op[3])
    elif kind == "removexattr":
        os.removexattr(path, op[2])
    else:
        raise AssertionError(kind)


def write_all(fd, data, off):
    done = 0
    while done < len(data):
        chunk = data[done:done + (1 << 20)]
        n = os.write(fd, chunk) if off is None else os.pwrite(fd, chunk, off + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


def worker(w, mnt, control, plan, report_fd, go_fd):
    """Runs the plan of worker w; reports each step on report_fd as a line (short enough to be
    written atomically into the pipe the workers share). Never returns."""
    os.umask(0o022)

    def say(line):
        os.write(report_fd, f"{w} {line}\n".encode())

    status = 0
    try:
        for k, (ops, _, commit, via_ioctl) in enumerate(plan):
            step = "begin"
            try:
                tx_call(control, "begin", via_ioctl)
                for m, op in enumerate(ops):
                    step = op_text(op)
                    run_op(mnt, op)
                    say(f"O {k} {m}")
                step = "commit" if commit else "rollback"
                say(f"C {k}" if commit else f"B {k}")
                if os.read(go_fd, 1) != b"g":
                    break
                tx_call(control, step, via_ioctl)
                say(f"A {k}" if commit else f"R {k}")
            except OSError as e:
                say(f"E {k} {errno.errorcode.get(e.errno, e.errno)} {step}")
                break
        else:
            say("D")
    except BaseException:  # never let the worker run the parent's cleanup
        status = 1
    os._exit(status)


# ---- Watching the log ------------------------------------------------------------------------


class LogWatch:
    """Reports each write into the log's container files (inotify IN_MODIFY, which io_uring
    writes raise as well), so that a kill can land right after the daemon's n-th log write of a
    commit: between the prepare records and the decision, for one."""

    IN_MODIFY = 0x2
    EVENT = struct.Struct("=iIII")

    def __init__(self, state_dir):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs = 0
        for d, _, _ in os.walk(state_dir):
            if libc.inotify_add_watch(self.fd, d.encode(), self.IN_MODIFY) >= 0:
                self.dirs += 1

    def writes(self):
        """How many container writes happened since the last call (at least: inotify merges
        identical events that were not read yet, so this is exact only when read promptly)."""
        n = 0
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            off = 0
            while off < len(buf):
                _, mask, _, length = self.EVENT.unpack_from(buf, off)
                name = buf[off + self.EVENT.size:off + self.EVENT.size + length].rstrip(b"\0")
                off += self.EVENT.size + length
                if mask & self.IN_MODIFY and name.startswith(b"container."):
                    n += 1

    def close(self):
        os.close(self.fd)


# ---- The daemon -------------------------------------------------------------------------------




def thread_states(who, pid):
    """Where each thread of pid waits: for reports of hangs."""
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return f"  {who} {pid}: gone"
    lines = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read().strip()
        except OSError:
            continue
        lines.append(f"  {who} {pid} thread {tid}: state {state}, waits in {wchan}")
    return "\n".join(lines)


class Daemon:
    """One ktmfs process at a time; stop() always leaves nothing running or mounted."""

    def __init__(self, args, log):
        self.args = args
        self.log = log
        self.proc = None
        self.conn = None  # the FUSE connection (the mount's device minor) once mounted

    def start(self):
        a = self.args
        cmd = [a.ktmfs, "-f"] + (["-o", a.options] if a.options else []) + [a.source, a.mnt]
        with open(a.daemon_log, "a") as dl:
            dl.write(f"mount: {' '.join(cmd)}\n")
            dl.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=dl, stderr=dl,
                                         start_new_session=True)
        if a.pidfile:
            with open(a.pidfile, "w") as f:
                f.write(f"{self.proc.pid}\n")

    def wait_mounted(self, timeout=20.0):
        """True once mounted; False (and reaped) if the daemon exits first or takes too long."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if mounted(self.args.mnt):
                self.conn = mount_device(self.args.mnt)
                return True
            if self.proc.poll() is not None:
                self.reap()
                return False
            time.sleep(0.005)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self):
        """SIGKILLs the daemon and waits until it is gone. Returns None, or, if it could not die
        (a thread blocked in the kernel on its own mount, which nothing but aborting the FUSE
        connection releases), where its threads were stuck; the connection is then aborted."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
            return None
        except subprocess.TimeoutExpired:
            pass
        stuck = thread_states("daemon", self.proc.pid)
        aborted = self.abort_connection()
        self.log(f"  the daemon did not die within 5 s of SIGKILL:\n{stuck}\n  {aborted}")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stuck += "\n  (and it still lived 20 s after the abort)"
        return stuck

    def abort_connection(self):
        """Aborts the daemon's FUSE connection through fusectl."""
        return abort_connection(mount_device(self.args.mnt) or self.conn)

    def kill(self):
        """Kills the daemon (if alive), reaps it and takes its mount down; returns what sigkill
        returns."""
        stuck = None
        if self.proc is not None:
            stuck = self.sigkill()
            if self.proc.poll() is not None:
                self.reap()
        self.unmount_dead()
        return stuck

    def reap(self):
        if self.args.pidfile and os.path.exists(self.args.pidfile):
            os.unlink(self.args.pidfile)
        self.proc = None

    def unmount_dead(self):
        """Takes down the mount of a daemon that is gone (the connection is aborted)."""
        mnt = self.args.mnt
        for _ in range(50):
            if not mounted(mnt):
                return
            subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
            if mounted(mnt):
                time.sleep(0.1)
        if mounted(mnt):
            self.log(f"{mnt} stayed busy; unmounting lazily")
            subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)

    def stop_clean(self):
        """Unmounts and waits for the daemon to exit; returns a problem or None."""
        mnt, problem = self.args.mnt, None
        for _ in range(50):
            if not mounted(mnt):
                break
            if subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        if mounted(mnt):
            problem = "the mount stayed busy at unmount"
        if self.proc is not None:
            try:
                status = self.proc.wait(timeout=30)
                if status != 0:
                    problem = problem or f"the daemon exited with status {status} after the unmount"
            except subprocess.TimeoutExpired:
                problem = problem or "the daemon did not exit within 30 s of the unmount"
        self.kill()
        return problem


# ---- Reading a tree ---------------------------------------------------------------------------


def read_tree(top, skip_top=()):
    """The tree under top as the model describes it (lstat, never following symlinks)."""
    tree = {}

    def walk(dirpath, rel):
        for name in sorted(os.listdir(dirpath)):
            if not rel and name in skip_top:
                continue
            p, r = os.path.join(dirpath, name), join(rel, name)
            st = os.lstat(p)
            if os.path.islink(p):
                tree[r] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                tree[r] = ("d", st.st_mode & 0o7777)
                walk(p, r)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
                names = sorted(n for n in os.listxattr(p) if n.startswith("user."))
                xattrs = tuple((n, os.getxattr(p, n)) for n in names)
                tree[r] = ("f", st.st_mode & 0o7777, data, xattrs)
            else:
                tree[r] = ("other", oct(st.st_mode))

    walk(top, "")
    return tree


# ---- The harness ------------------------------------------------------------------------------


class Failure(Exception):
    pass


def uring_enabled():
    """Whether the kernel offers FUSE over io_uring to new mounts (the daemon takes it)."""
    try:
        with open("/sys/module/fuse/parameters/enable_uring") as f:
            return f.read().strip() in ("Y", "1")
    except OSError:
        return False


class Harness:
    def __init__(self, args):
        self.args = args
        self.logf = open(args.log, "a") if args.log else sys.stderr
        self.daemon = Daemon(args, self.log)
        self.worker_pids = []
        self.hangs = []
        self.current = (None, None)
        # What a call in flight gets when the daemon dies. Over FUSE's io_uring transport the
        # kernel may also end the requests of the dead daemon's ring with ECANCELED or EINTR
        # (both seen on Linux 6.18).
        self.dead_daemon_errors = ["ENOTCONN", "ECONNABORTED"]
        if uring_enabled() and "nouring" not in args.options.split(","):
            self.dead_daemon_errors += ["ECANCELED", "EINTR"]
        if args.two:
            self.backings = {"data": os.path.join(args.backing, "a"),
                             "conf": os.path.join(args.backing, "b")}
            args.source = ":".join(f"{n}={d}" for n, d in self.backings.items())
        else:
            self.backings = {"": args.backing}
            args.source = args.backing
        # Each worker has a directory of its own under every source (the source roots
        # themselves for a single worker), so that the workers never conflict and each one's
        # state can be checked on its own.
        self.roots = []
        for w in range(args.workers):
            sub = f"w{w}" if args.workers > 1 else ""
            self.roots.append([join(top, sub) for top in self.backings])
        for top, d in self.backings.items():
            os.makedirs(d, exist_ok=True)
            if args.workers > 1:
                for w in range(args.workers):
                    os.makedirs(os.path.join(d, f"w{w}"), exist_ok=True)
        # Directories that are there from the start, not part of any model.
        self.fixed = {r for roots in self.roots for r in roots if r} | {t for t in self.backings if t}
        self.xattrs = self.backing_has_xattrs()
        self.committed = [{} for _ in range(args.workers)]
        self.candidates = [[("the acknowledged state", {})] for _ in range(args.workers)]
        self.stats = {"ops": 0, "during ops": 0, "during commit": 0, "at a log write": 0,
                      "after commit": 0,
                      "during rollback": 0, "idle": 0, "in-flight applied": 0,
                      "in-flight absent": 0, "recovery kills": 0, "commits acked": 0}

    def log(self, text):
        self.logf.write(text + "\n")
        self.logf.flush()

    def backing_has_xattrs(self):
        probe = os.path.join(next(iter(self.backings.values())), ".crashwork-xattr-probe")
        try:
            with open(probe, "w"):
                pass
            os.setxattr(probe, "user.probe", b"1")
            return True
        except OSError as e:
            self.log(f"the backing filesystem has no user xattrs ({e}); no xattr operations")
            return False
        finally:
            if os.path.exists(probe):
                os.unlink(probe)

    def mount(self, what):
        self.daemon.start()
        if not self.daemon.wait_mounted():
            tail = self.daemon_log_tail()
            self.daemon.kill()
            raise Failure(f"{what}: the daemon did not mount (it must recover and mount)\n{tail}")

    def daemon_log_tail(self, n=15):
        try:
            with open(self.args.daemon_log, errors="replace") as f:
                return "".join("  daemon: " + line for line in f.readlines()[-n:])
        except OSError:
            return ""

    def check(self, where, it_seed):
        self.match(where, it_seed, read_tree(self.args.mnt))

    def match(self, where, it_seed, got):
        """Checks a whole tree: the fixed directories, then each worker's part against that
        worker's candidates; adopts the matching candidates as the acknowledged states."""
        problems = []
        for p in sorted(self.fixed):
            if got.get(p, ("absent",))[0] != "d":
                problems.append(f" the directory {p} is missing: {describe(got.get(p))}")
        parts = [{} for _ in self.roots]
        stray = {}
        for p, e in got.items():
            if p in self.fixed:
                continue
            owner = [w for w, roots in enumerate(self.roots)
                     if any(r == "" or p.startswith(r + "/") for r in roots)]
            if owner:
                parts[owner[0]][p] = e
            else:
                stray[p] = e
        if stray:
            problems.append(" entries nobody made:")
            problems += tree_diff({}, stray)
        matched = []
        for w, part in enumerate(parts):
            who = f" worker {w}:" if len(self.roots) > 1 else ""
            found = None
            for i, (name, tree) in enumerate(self.candidates[w]):
                if part == tree:
                    found = (i, name, tree)
                    break
            if found is None:
                problems.append(f"{who} matches none of the allowed states")
                for name, tree in self.candidates[w]:
                    problems.append(f" against {name}:")
                    problems += tree_diff(tree, part)
            else:
                matched.append((w, found))
        if problems:
            raise Failure(f"{where} (seed {it_seed}): the tree is wrong\n" + "\n".join(problems))
        for w, (i, name, tree) in matched:
            if len(self.candidates[w]) > 1:
                self.stats["in-flight applied" if i == 1 else "in-flight absent"] += 1
            self.log(f"  {where}: worker {w} matches {name} ({len(tree)} entries)")
            self.committed[w] = tree
            self.candidates[w] = [("the acknowledged state", tree)]

    def run(self):
        a = self.args
        base = random.Random(a.seed)
        self.log(f"crashwork: seed {a.seed}, {a.iterations} iterations, "
                 f"{'two sources' if a.two else 'one source'}, {a.workers} worker(s)"
                 f"{', kills during recovery' if a.recovery_kills else ''}")
        began = time.monotonic()
        for i in range(a.iterations):
            it_seed = base.getrandbits(63)
            # The time stamps show, in the log of a run that ran out of time, which step was slow.
            self.log(f"iteration {i}: seed {it_seed} ({time.monotonic() - began:.1f} s into the run)")
            self.current = (i, it_seed)
            self.mount(f"iteration {i}: mount after the kill")
            self.check(f"iteration {i}: after recovery", it_seed)
            self.iteration(i, it_seed)
            if a.recovery_kills:
                self.kill_recoveries(i, random.Random(it_seed ^ 0x5EED))
        self.current = ("final", a.seed)
        self.mount("the final mount")
        self.check("the final mount", a.seed)
        problem = self.daemon.stop_clean()
        if problem:
            raise Failure(f"the final unmount: {problem}\n{self.daemon_log_tail()}")
        if self.hangs:  # before the backing check, which may fail because of them
            self.log("\n".join(self.hangs))
        backing = {}
        for top, d in self.backings.items():
            if top:
                backing[top] = ("d", os.stat(d).st_mode & 0o7777)
            for p, e in read_tree(d, skip_top=(".ktmfs",)).items():
                backing[join(top, p)] = e
        self.match("the backing directories after the final unmount", a.seed, backing)
        self.check_daemon_log()
        if self.hangs:
            raise Failure(f"{len(self.hangs)} time(s) the daemon could not die; the first:\n"
                          + self.hangs[0])
        self.log("done: " + ", ".join(f"{k} {v}" for k, v in self.stats.items()))

    def check_daemon_log(self):
        try:
            with open(self.args.daemon_log, errors="replace") as f:
                text = f.read()
        except OSError:
            return
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                raise Failure(f"the daemon reported a sanitizer error ({marker}); see its log")

    def iteration(self, i, it_seed):
        rng = random.Random(it_seed)
        plans = []
        for w, roots in enumerate(self.roots):
            gen = Generator(random.Random(rng.getrandbits(63)), roots, self.xattrs, self.args.skip)
            plan, tree = [], self.committed[w]
            for _ in range(rng.randint(2, 10)):
                ops, after, commit, via_ioctl = gen.plan_transaction(tree)
                plan.append((ops, after, commit, via_ioctl))
                if commit:  # a rolled-back transaction leaves the tree as it was
                    tree = after
            plans.append(plan)
            for n, (ops, _, commit, via_ioctl) in enumerate(plan):
                self.log(f"  worker {w} tx {n} ({'commit' if commit else 'rollback'} via "
                         f"{'ioctl' if via_ioctl else 'xattr'}): "
                         + "; ".join(op_text(o) for o in ops))
        # Where to kill: an event of one worker's plan, then a delay.
        kw = rng.randrange(len(plans))
        k = rng.randrange(len(plans[kw]))
        phase = rng.choices(["ops", "end", "logwrite", "after", "idle"], [3, 4, 3, 2, 1])[0]
        m = rng.randrange(len(plans[kw][k][0])) if plans[kw][k][0] else 0
        delay = rng.choice([0.0, rng.uniform(0, 0.0005), rng.uniform(0, 0.003)])
        nth_write = rng.randint(1, 3)
        self.log(f"  kill: {phase} of worker {kw} tx {k}"
                 + (f" after op {m}" if phase == "ops" else "")
                 + (f" at its log write {nth_write}" if phase == "logwrite"
                    else f", delay {delay * 1e6:.0f} us"))
        watch = self.watch_log() if phase == "logwrite" else None
        try:
            self.run_plans(i, it_seed, plans, kw, k, phase, m, delay, nth_write, watch)
        finally:
            if watch:
                watch.close()

    def watch_log(self):
        state = os.path.join(next(iter(self.backings.values())), ".ktmfs")
        for opt in self.args.options.split(","):
            if opt.startswith("state="):
                state = opt[len("state="):]
        watch = LogWatch(state)
        if not watch.dirs:
            self.log(f"  cannot watch the log in {state}; the kill falls back to the commit's end")
        return watch

    def run_plans(self, i, it_seed, plans, kw, k, phase, m, delay, nth_write, watch):

        report_r, report_w = os.pipe()
        go = []
        for w, plan in enumerate(plans):
            go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(report_r)
                os.close(go_w)
                for _, fd in go:
                    os.close(fd)
                worker(w, self.args.mnt, os.path.join(self.args.mnt, self.roots[w][0]), plan,
                       report_w, go_r)
            self.worker_pids.append(pid)
            os.close(go_r)
            go.append((w, go_w))
        os.close(report_w)
        go = dict(go)
        killed = False
        inflight = [None] * len(plans)  # per worker, the transaction whose commit is in flight
        errors = []
        armed, seen = False, 0  # the log writes seen since the watched commit began
        hangs_before = len(self.hangs)
        for line in self.reports(report_r, i, it_seed, watch):
            f = line.split()
            if f[0] == "L":
                if armed and not killed:
                    seen += int(f[1])
                    if seen >= nth_write:
                        self.kill_after(0, "at a log write")
                        killed = True
                continue
            w, kind = int(f[0]), f[1]
            ours = not killed and w == kw
            if kind == "O":
                self.stats["ops"] += 1
                if ours and phase == "ops" and int(f[2]) == k and int(f[3]) == m:
                    self.kill_after(delay, "during ops")
                    killed = True
            elif kind in ("C", "B"):
                n = int(f[2])
                if killed:  # a commit sent now could not reach the daemon: keep the oracle tight
                    os.close(go.pop(w))
                    continue
                if kind == "C":
                    inflight[w] = n
                try:
                    os.write(go[w], b"g")
                except BrokenPipeError:
                    pass
                if ours and n == k and phase in ("end", "ops"):
                    self.kill_after(delay, "during commit" if kind == "C" else "during rollback")
                    killed = True
                if ours and n == k and phase == "logwrite":
                    watch.writes()  # forget the writes of the operations before
                    armed = True
            elif kind in ("A", "R"):
                n = int(f[2])
                if kind == "A":
                    self.committed[w] = plans[w][n][1]
                    self.stats["commits acked"] += 1
                    inflight[w] = None
                if ours and n == k and phase == "after":
                    self.kill_after(delay, "after commit")
                    killed = True
                if ours and n == k and phase == "logwrite":
                    self.log(f"  the {'commit' if kind == 'A' else 'rollback'} ended after "
                             f"{seen} log writes, fewer than {nth_write}")
                    self.kill_after(0, "after commit")
                    killed = True
            elif kind == "E":
                errors.append((killed, line))
        for fd in go.values():
            os.close(fd)
        if len(self.hangs) > hangs_before:  # what the workers were doing: their failed steps
            self.hangs[-1] += "".join(
                f"\n  worker {e.split()[0]} was in tx {e.split()[2]}: {' '.join(e.split()[4:])}"
                f" (it failed with {e.split()[3]})" for _, e in errors)
        crashed = []
        while self.worker_pids:
            pid = self.worker_pids.pop()
            _, status = os.waitpid(pid, 0)
            if status != 0:
                crashed.append(pid)
        if not killed:
            self.kill_after(0, "idle")
        for was_killed, text in errors:
            f = text.split()
            w, n, e_name, step = f[0], f[2], f[3], " ".join(f[4:])
            if e_name not in self.dead_daemon_errors:
                when = "after the kill" if was_killed else "before any kill"
                raise Failure(f"iteration {i} (seed {it_seed}): {when}, worker {w} tx {n}: "
                              f"{step} failed with {e_name}"
                              + (f" (expected {' or '.join(self.dead_daemon_errors)})"
                                 if was_killed else ""))
            if not was_killed:
                raise Failure(f"iteration {i} (seed {it_seed}): worker {w} tx {n}: {step} "
                              f"failed with {e_name} before any kill (the daemon died?)\n"
                              + self.daemon_log_tail())
        if crashed:
            raise Failure(f"iteration {i} (seed {it_seed}): a worker crashed")
        self.daemon.kill()  # reaps the killed daemon and takes its dead mount down
        for w, plan in enumerate(plans):
            self.candidates[w] = [("the acknowledged state", self.committed[w])]
            if inflight[w] is not None:
                self.candidates[w].append(
                    (f"the acknowledged state plus tx {inflight[w]} (in flight)",
                     plan[inflight[w]][1]))
                self.log(f"  worker {w} tx {inflight[w]} was in flight at the kill")

    def reports(self, fd, i, it_seed, watch=None, quiet_limit=20.0):
        """The workers' report lines until they all close the pipe, and "L N" when the log was
        written N times (if watched). Silence for quiet_limit seconds means a hung daemon: that
        fails the run (the cleanup kills everything)."""
        pending = b""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                fds = [f, watch.fd] if watch else [f]
                ready, _, _ = select.select(fds, [], [], quiet_limit)
                if watch and watch.fd in ready:
                    n = watch.writes()
                    if n:
                        yield f"L {n}"
                    if f not in ready:
                        continue
                if not ready:
                    raise Failure(f"iteration {i} (seed {it_seed}): the workers made no progress "
                                  f"for {quiet_limit:.0f} s (a request hangs in the daemon?)\n"
                                  + self.process_states())
                chunk = f.read(65536)
                if not chunk:
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode()

    def process_states(self):
        """Where the daemon's threads and the workers wait: for the report of a hang."""
        pids = [("worker", p) for p in self.worker_pids]
        if self.daemon.proc is not None:
            pids.append(("daemon", self.daemon.proc.pid))
        return "\n".join(thread_states(who, pid) for who, pid in pids)

    def kill_after(self, delay, what):
        if delay:
            end = time.monotonic() + delay
            while time.monotonic() < end:
                pass
        self.log(f"  killed the daemon {what}")
        self.stats[what] += 1
        self.note_hang(what, self.daemon.sigkill())

    def note_hang(self, what, stuck):
        """A daemon that SIGKILL could not end is a failure, reported at the end of the run (its
        connection was aborted, so the run goes on and still checks every tree)."""
        if stuck:
            i, it_seed = self.current
            self.hangs.append(f"iteration {i} (seed {it_seed}), killed {what}: the daemon did "
                              f"not die within 5 s of SIGKILL; its FUSE connection had to be "
                              f"aborted. Its threads:\n{stuck}")

    def kill_recoveries(self, i, rng):
        for _ in range(rng.randint(1, 2)):
            self.daemon.start()
            delay = rng.uniform(0, 0.03)
            end = time.monotonic() + delay
            while time.monotonic() < end and self.daemon.alive():
                pass
            was_mounted = mounted(self.args.mnt)
            self.log(f"  killed the daemon {delay * 1e3:.1f} ms into its recovery"
                     f" ({'mounted already' if was_mounted else 'not mounted yet'})")
            self.stats["recovery kills"] += 1
            self.note_hang("during recovery", self.daemon.kill())

    def cleanup(self):
        self.daemon.kill()  # first: a worker waiting on the daemon cannot die before it
        for pid in self.worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.worker_pids = []


def model_check(top, seed, count, log):
    """Runs `count` planned transactions' operations straight in `top` (no transaction, no
    daemon of ours) and compares the tree with the model after each: the proof that the model
    says what plain Linux does, so that a mismatch after a crash is the filesystem's fault."""
    os.umask(0o022)
    probe = os.path.join(top, ".crashwork-xattr-probe")
    try:
        with open(probe, "w"):
            pass
        os.setxattr(probe, "user.probe", b"1")
        xattrs = True
    except OSError as e:
        log(f"no user xattrs here ({e}); no xattr operations")
        xattrs = False
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    gen = Generator(random.Random(seed), [""], xattrs)
    tree = {}
    for n in range(count):
        ops, tree, _, _ = gen.plan_transaction(tree)
        log(f"tx {n}: " + "; ".join(op_text(o) for o in ops))
        for op in ops:
            try:
                run_op(top, op)
            except OSError as e:
                raise Failure(f"tx {n} (seed {seed}): {op_text(op)} failed with "
                              f"{errno.errorcode.get(e.errno, e.errno)}")
        if n >= 10 and n % 10 != 9 and n != count - 1:
            continue  # reading the whole tree each time would make it quadratic
        diff = tree_diff(tree, read_tree(top))
        if diff:
            raise Failure(f"tx {n} (seed {seed}): the tree differs from the model\n"
                          + "\n".join(diff))
    log(f"model check: {count} transactions, {len(tree)} entries at the end")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ktmfs", default=os.environ.get("KTMFS"), help="the daemon")
    p.add_argument("--backing", help="an empty directory for the backing tree(s)")
    p.add_argument("--mnt", help="the mount point")
    p.add_argument("--model-check", metavar="DIR",
                   help="no daemon, no kills: run --iterations transactions' operations in DIR "
                        "(an empty directory) and compare the tree with the model after them")
    p.add_argument("--options", default=os.environ.get("KTMFS_MOUNT_OPTIONS", ""),
                   help="mount options (-o)")
    p.add_argument("--two", action="store_true", help="two named sources, two-phase commit")
    p.add_argument("--recovery-kills", action="store_true", help="also kill during recovery")
    p.add_argument("--workers", type=int, default=1,
                   help="concurrent transactions, each worker in its own subdirectory")
    p.add_argument("--seed", type=int, default=None, help="replay this seed")
    p.add_argument("--skip-ops", default="",
                   help="operation kinds to leave out, comma-separated (create, write, append, "
                        "truncate, unlink, rename, renamedir, mkdir, rmdir, symlink, chmod, "
                        "setxattr, removexattr): by hand, to look past a known bug")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--log", help="the detailed log (default stderr)")
    p.add_argument("--daemon-log", help="the daemons' stderr (default BACKING/../daemon.log)")
    p.add_argument("--pidfile", help="keeps the running daemon's pid, for an outside cleanup")
    args = p.parse_args()
    args.skip = [k for k in args.skip_ops.split(",") if k]
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(31)
    if args.model_check:
        logf = open(args.log, "a") if args.log else sys.stderr

        def log(text):
            logf.write(text + "\n")
            logf.flush()

        log(f"crashwork: model check in {args.model_check}, seed {args.seed}")
        try:
            model_check(args.model_check, args.seed, args.iterations, log)
        except Failure as e:
            log(f"FAILED: {e}")
            print(f"FAILED: {e}\n(replay: crashwork.py --model-check DIR --seed {args.seed} "
                  f"--iterations {args.iterations})")
            return 1
        print("crashwork: the tree matched the model")
        return 0
    if not args.backing or not args.mnt:
        p.error("--backing and --mnt are needed (or --model-check)")
    if not args.ktmfs:
        p.error("--ktmfs (or $KTMFS) is needed")
    args.mnt = os.path.realpath(args.mnt)
    args.backing = os.path.realpath(args.backing)
    if not args.daemon_log:
        args.daemon_log = os.path.join(os.path.dirname(args.backing), "crashwork-daemon.log")

    h = Harness(args)

    def on_signal(signum, _frame):
        # The runner's time limit ends a run with SIGTERM: say where it was and what waited.
        where = h.current if hasattr(h, "current") else None
        h.log(f"terminated by signal {signum} in {where} (iteration, seed); where the processes "
              f"wait:\n{h.process_states()}")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        h.run()
    except Failure as e:
        text = str(e)
        h.log("FAILED: " + text)
        print(f"FAILED: {text}\n(replay: crashwork.py --seed {args.seed} --iterations "
              f"{args.iterations}{f' --skip-ops {args.skip_ops}' if args.skip else ''}"
              f"{' --two' if args.two else ''}"
              f"{' --recovery-kills' if args.recovery_kills else ''}"
              f"{f' --workers {args.workers}' if args.workers > 1 else ''}; log: {args.log})")
        return 1
    finally:
        h.cleanup()
    print("crashwork: every tree matched the model")  # counts and seeds go to the log
    return 0


if __name__ == "__main__":
    sys.exit(main())

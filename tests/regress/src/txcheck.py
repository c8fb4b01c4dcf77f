#!/usr/bin/env python3
"""txcheck: a model-based checker of ktmfs transactions under concurrency.

Several actors, each its own process (so that process-scoped transactions bind it alone), take
turns in a seeded random interleaving: transactional actors begin, change the tree, commit or
roll back; plain actors change the tree outside any transaction. Every step runs both against a
real ktmfs mount and against an executable model of the contract (design.md, ktmfs-tx(7)):

  - outside a transaction an actor sees the committed tree; inside, the committed tree plus its
    own changes; a commit makes the transaction's view the committed tree at once;
  - conflicts: a live transaction T holds every existing object it changed (content,
    attributes, xattrs, link count, or moved it) and every name it created, removed or renamed
    from/to. Another actor's change gets EBUSY at once when it changes an object or a name T
    holds, anything strictly below a name T holds, or removes, renames or replaces a directory
    below which T holds anything. Reads never get EBUSY.

After every step the return code is checked, and every actor reads what the step touched (stat,
directory listing, contents, xattrs) and compares it with the model's view for that actor;
periodically, and after every remount, the whole tree. With --kill-rate the daemon is SIGKILLed
at random steps and remounted: live transactions are gone, the tree must be the committed one.
With --disk-mb the backing directory lives on a small ext4 loop filesystem that --fill-rate fills
and frees at random steps: on a full disk any change may fail with ENOSPC and must then have no
effect (a create or O_TRUNC whose write failed counts as an empty file), a commit may be refused
with ENOSPC and must then be wholly absent, a rollback never fails, and a mount (after a kill)
must come up.

A failure prints the seed and the trace, shrunk by replaying fewer steps. Exit 0 and a one-line
summary when nothing was found; 1 on a failure; 2 on bad usage or a broken environment.

    txcheck.py --build BUILD --seed 7 --steps 300
    txcheck.py --build BUILD --minutes 30 --kill-rate 0.01      # a long run over many seeds
    txcheck.py --build BUILD --minutes 60 --kill-rate 0.01 --disk-mb 64   # ... and a full disk
    txcheck.py --native /tmp/empty-dir --steps 2000             # the model against plain Linux
"""

import argparse
import ctypes
import errno
import json
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from fuse_mounts import abort_connection, mount_device

ROOT = 0  # the model's object id of the root directory
NAMES = ["a", "b", "c", "d", "e", "f", "g", "x", "y", "z"]  # few names: collisions are frequent
XATTRS = ["user.p", "user.q"]
FILE_MODES = [0o644, 0o600, 0o640, 0o444]
DIR_MODES = [0o755, 0o700, 0o750]
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100

# The tree every run starts from: a few directories two levels deep, a few files, and two names
# of one file (f and g).
INITIAL_DIRS = ["a", "a/c", "b", "b/d", "e"]
INITIAL_FILES = {"a/c/x": "cx", "a/y": "ay", "b/z": "bz", "f": "ff", "h": "hh"}
INITIAL_LINKS = {"g": "f"}


def errname(code):
    return errno.errorcode.get(code, str(code))


# ==== The agent: one actor's process =============================================================
# Reads one JSON operation per line on stdin, runs it against the tree at its root and answers
# one JSON line: {"r": "OK", "v": value} or {"r": "ENOENT"}.


def agent_describe(p):
    """What one path looks like (the model's describe() gives the same shape)."""
    try:
        st = os.lstat(p)
    except OSError as e:
        return {"err": errname(e.errno)}
    d = {"mode": stat.S_IMODE(st.st_mode)}
    try:
        d["xattrs"] = {n: os.getxattr(p, n, follow_symlinks=False).decode("latin-1")
                       for n in sorted(os.listxattr(p, follow_symlinks=False))
                       if n.startswith("user.")}
        if stat.S_ISDIR(st.st_mode):
            d["type"] = "d"
            d["entries"] = sorted(os.listdir(p))
        elif stat.S_ISREG(st.st_mode):
            d["type"] = "f"
            d.update(size=st.st_size, nlink=st.st_nlink, mtime=st.st_mtime_ns)
            with open(p, "rb") as f:
                d["data"] = f.read().decode("latin-1")
        else:
            d["type"] = "other"
    except OSError as e:
        return {"err": "read " + errname(e.errno)}
    return d


def agent_tree(top):
    """Every path under top (relative, "" for top itself) and what it looks like."""
    out = {}

    def walk(rel):
        d = agent_describe(os.path.join(top, rel) if rel else top)
        out[rel] = d
        for name in d.get("entries", []):
            walk(f"{rel}/{name}" if rel else name)

    walk("")
    return out


class PartialError(OSError):
    """A two-step operation whose first step (the create, or the truncate of O_TRUNC) happened
    before the second (the write) failed: the model follows with the data left out."""


def agent_write(p, flags, data, off=None):
    fd = os.open(p, flags, 0o666)
    try:
        if off is None:
            os.write(fd, data.encode("latin-1"))
        else:
            os.pwrite(fd, data.encode("latin-1"), off)
    except OSError as e:
        if flags & (os.O_CREAT | os.O_TRUNC):
            raise PartialError(e.errno, e.strerror)
        raise
    finally:
        os.close(fd)


def agent_rename(src, dst, flags):
    if flags == 0:
        os.rename(src, dst)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


def agent_run(top, op):
    k = op["op"]
    p = os.path.join(top, op.get("path", ""))
    W = os.O_WRONLY
    if k == "look":
        return {q: agent_describe(os.path.join(top, q) if q else top) for q in op["paths"]}
    if k == "tree":
        return agent_tree(top)
    if k in ("begin", "commit", "rollback"):
        os.setxattr(top, "user.ktmfs.tx." + k, b"")
    elif k == "create":
        agent_write(p, W | os.O_CREAT | os.O_EXCL, op["data"])
    elif k == "overwrite":
        agent_write(p, W | os.O_TRUNC, op["data"])
    elif k == "write":
        agent_write(p, W, op["data"], op["off"])
    elif k == "append":
        agent_write(p, W | os.O_APPEND, op["data"])
    elif k == "truncate":
        os.truncate(p, op["size"])
    elif k == "mkdir":
        os.mkdir(p, 0o777)
    elif k == "rmdir":
        os.rmdir(p)
    elif k == "unlink":
        os.unlink(p)
    elif k == "rename":
        agent_rename(os.path.join(top, op["src"]), os.path.join(top, op["dst"]), op["flags"])
    elif k == "link":
        os.link(os.path.join(top, op["src"]), os.path.join(top, op["dst"]))
    elif k == "chmod":
        os.chmod(p, op["mode"])
    elif k == "utimes":
        os.utime(p, ns=(op["mtime"], op["mtime"]))
    elif k == "setxattr":
        os.setxattr(p, op["name"], op["value"].encode(), os.XATTR_CREATE if op["create"] else 0,
                    follow_symlinks=False)
    elif k == "removexattr":
        os.removexattr(p, op["name"], follow_symlinks=False)
    else:
        raise ValueError(f"unknown op {k}")
    return None


def agent_main(top):
    # Ctrl-C goes to the whole process group; the checker stops its actors itself, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.umask(0o022)
    os.chdir("/")
    for line in sys.stdin:
        op = json.loads(line)
        try:
            out = {"r": "OK", "v": agent_run(top, op)}
        except PartialError as e:
            out = {"r": errname(e.errno), "partial": True}
        except OSError as e:
            out = {"r": errname(e.errno)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


# ==== The model of the tree ======================================================================


class Obj:
    """A file ("f", with data) or a directory ("d", with children: name -> object id)."""
    __slots__ = ("kind", "data", "children", "mode", "xattrs", "mtime")

    def __init__(self, kind, mode, data=""):
        self.kind, self.mode, self.data = kind, mode, data
        self.children = {} if kind == "d" else None
        self.xattrs = {}
        self.mtime = None  # known only after utimes, until the content changes

    def clone(self):
        o = Obj(self.kind, self.mode, self.data)
        o.children = dict(self.children) if self.children is not None else None
        o.xattrs, o.mtime = dict(self.xattrs), self.mtime
        return o


class Tree:
    def __init__(self):
        self.objs = {ROOT: Obj("d", 0o755)}

    def clone(self):
        t = Tree()
        t.objs = {i: o.clone() for i, o in self.objs.items()}
        return t

    def walk(self, path):
        """(err, parent id, name, object id or None) for path: err if a directory above the
        last component is missing (ENOENT) or not a directory (ENOTDIR)."""
        comps = path.split("/")
        cur = ROOT
        for c in comps[:-1]:
            nxt = self.objs[cur].children.get(c)
            if nxt is None:
                return "ENOENT", None, None, None
            if self.objs[nxt].kind != "d":
                return "ENOTDIR", None, None, None
            cur = nxt
        return None, cur, comps[-1], self.objs[cur].children.get(comps[-1])

    def lookup(self, path):
        if path == "":
            return ROOT
        err, _, _, oid = self.walk(path)
        return None if err else oid

    def entries_along(self, path):
        """Every (directory id, name) a path walks through, the last one included, as far as
        it resolves."""
        out, cur = [], ROOT
        for c in path.split("/"):
            out.append((cur, c))
            nxt = self.objs[cur].children.get(c)
            if nxt is None or self.objs[nxt].kind != "d":
                break
            cur = nxt
        return out

    def subtree(self, oid):
        """The ids of oid and everything below it."""
        out, todo = set(), [oid]
        while todo:
            i = todo.pop()
            out.add(i)
            if self.objs[i].kind == "d":
                todo.extend(self.objs[i].children.values())
        return out

    def nlink(self, oid):
        return sum(1 for o in self.objs.values() if o.kind == "d"
                   for c in o.children.values() if c == oid)

    def paths(self):
        """Every path (not the root) and its kind."""
        out = []

        def walk(oid, rel):
            for name, c in sorted(self.objs[oid].children.items()):
                p = f"{rel}/{name}" if rel else name
                out.append((p, self.objs[c].kind))
                if self.objs[c].kind == "d":
                    walk(c, p)

        walk(ROOT, "")
        return out

    def unlink_entry(self, parent, name):
        """Removes a name; an object no name refers to any more is dropped (with its subtree:
        only ever an empty directory or a file)."""
        oid = self.objs[parent].children.pop(name)
        if self.nlink(oid) == 0:
            for i in self.subtree(oid):
                self.objs.pop(i, None)

    def describe(self, path):
        err, _, _, oid = self.walk(path) if path else (None, None, None, ROOT)
        if err or oid is None:
            return {"err": err or "ENOENT"}
        o = self.objs[oid]
        d = {"mode": o.mode, "xattrs": dict(sorted(o.xattrs.items())), "type": o.kind}
        if o.kind == "d":
            d["entries"] = sorted(o.children)
        else:
            d.update(size=len(o.data), nlink=self.nlink(oid), mtime=o.mtime, data=o.data)
        return d

    def describe_all(self):
        return {p: self.describe(p) for p in [""] + [p for p, _ in self.paths()]}


def initial_tree(links=True):
    t = Tree()
    nid = 1
    for d in INITIAL_DIRS:
        _, parent, name, _ = t.walk(d)
        t.objs[nid] = Obj("d", 0o755)
        t.objs[parent].children[name] = nid
        nid += 1
    for f, data in INITIAL_FILES.items():
        _, parent, name, _ = t.walk(f)
        t.objs[nid] = Obj("f", 0o644, data)
        t.objs[parent].children[name] = nid
        nid += 1
    for link, target in INITIAL_LINKS.items() if links else ():
        _, parent, name, _ = t.walk(link)
        t.objs[parent].children[name] = t.lookup(target)
    return t, nid


def make_initial_tree(top, links=True):
    """The same tree on disk, made directly (in the backing directory, before mounting)."""
    os.umask(0o022)
    for d in INITIAL_DIRS:
        os.mkdir(os.path.join(top, d))
        os.chmod(os.path.join(top, d), 0o755)
    for f, data in INITIAL_FILES.items():
        with open(os.path.join(top, f), "w") as fh:
            fh.write(data)
        os.chmod(os.path.join(top, f), 0o644)
    for link, target in INITIAL_LINKS.items() if links else ():
        os.link(os.path.join(top, target), os.path.join(top, link))


# ---- POSIX semantics of each operation, in one view ---------------------------------------------
# apply_op(tree, op, new_id) returns an errno name, or None after changing tree. The order of
# the checks is Linux's (do_renameat2, linkat, ...); --native checks it against the kernel.


def op_file(t, path):
    """The regular file a content operation on path opens, or the error."""
    err, _, _, oid = t.walk(path)
    if err:
        return err, None
    if oid is None:
        return "ENOENT", None
    if t.objs[oid].kind == "d":
        return "EISDIR", None
    return None, t.objs[oid]


def op_any(t, path):
    err, _, _, oid = t.walk(path)
    if err:
        return err, None
    if oid is None:
        return "ENOENT", None
    return None, t.objs[oid]


def put_data(o, data):
    o.data = data
    o.mtime = None


def apply_create(t, op, new_id, kind):
    err, parent, name, oid = t.walk(op["path"])
    if err:
        return err
    if oid is not None:
        return "EEXIST"
    t.objs[new_id] = Obj(kind, 0o755 if kind == "d" else 0o644, op.get("data", ""))
    t.objs[parent].children[name] = new_id
    return None


def apply_remove(t, op, want_dir):
    err, parent, name, oid = t.walk(op["path"])
    if err:
        return err
    if oid is None:
        return "ENOENT"
    o = t.objs[oid]
    if want_dir and o.kind != "d":
        return "ENOTDIR"
    if not want_dir and o.kind == "d":
        return "EISDIR"
    if want_dir and o.children:
        return "ENOTEMPTY"
    t.unlink_entry(parent, name)
    return None


def is_below(path, top):
    return path.startswith(top + "/")


def parent_path(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def apply_rename(t, op):
    src, dst, flags = op["src"], op["dst"], op["flags"]
    serr, sp, sn, sid = t.walk(src)
    if serr:
        return serr
    derr, dp, dn, did = t.walk(dst)
    if derr:
        return derr
    if sid is None:
        return "ENOENT"
    if flags & RENAME_EXCHANGE and did is None:
        return "ENOENT"
    if flags & RENAME_NOREPLACE and did is not None:
        return "EEXIST"
    # lock_rename's trap: the source an ancestor of the target's directory, or the target an
    # ancestor of the source's directory (only when the two directories differ).
    if sp != dp:
        if is_below(parent_path(dst) + "/", src):
            return "EINVAL"
        if is_below(parent_path(src) + "/", dst):
            return "EINVAL" if flags & RENAME_EXCHANGE else "ENOTEMPTY"
    if sid == did:
        return None  # two names of one object: nothing happens
    skind = t.objs[sid].kind
    if did is not None and not flags & RENAME_EXCHANGE:
        dkind = t.objs[did].kind
        if skind == "d" and dkind != "d":
            return "ENOTDIR"
        if skind != "d" and dkind == "d":
            return "EISDIR"
        if dkind == "d" and t.objs[did].children:
            return "ENOTEMPTY"
    if flags & RENAME_EXCHANGE:
        t.objs[sp].children[sn], t.objs[dp].children[dn] = did, sid
        return None
    if did is not None:
        t.unlink_entry(dp, dn)
    del t.objs[sp].children[sn]
    t.objs[dp].children[dn] = sid
    return None


def apply_link(t, op):
    serr, _, _, sid = t.walk(op["src"])
    if serr:
        return serr
    if sid is None:
        return "ENOENT"
    derr, dp, dn, did = t.walk(op["dst"])
    if derr:
        return derr
    if did is not None:
        return "EEXIST"
    if t.objs[sid].kind == "d":
        return "EPERM"
    t.objs[dp].children[dn] = sid
    return None


CONTENT_OPS = ("overwrite", "write", "append", "truncate", "chmod", "utimes", "setxattr",
               "removexattr", "touch")


def apply_op(t, op, new_id, oid=None):
    """oid: for a content op, the object to change whatever its path now (see Model.apply)."""
    k = op["op"]
    if oid is not None and k in CONTENT_OPS and oid in t.objs:
        o = t.objs[oid]
        if k in ("overwrite", "write", "append", "truncate") and o.kind == "d":
            return "EISDIR"
        return apply_content(op, o)
    if k in ("create", "mkdir"):
        return apply_create(t, op, new_id, "f" if k == "create" else "d")
    if k in ("rmdir", "unlink"):
        return apply_remove(t, op, k == "rmdir")
    if k == "rename":
        return apply_rename(t, op)
    if k == "link":
        return apply_link(t, op)
    if k in ("overwrite", "write", "append", "truncate"):
        err, o = op_file(t, op["path"])
        return err or apply_content(op, o)
    err, o = op_any(t, op["path"])
    return err or apply_content(op, o)


def apply_content(op, o):
    k = op["op"]
    if k in ("overwrite", "write", "append", "truncate"):
        if k == "overwrite":
            put_data(o, op["data"])
        elif k == "append":
            put_data(o, o.data + op["data"])
        elif k == "write":
            base = o.data.ljust(op["off"], "\0")
            put_data(o, base[:op["off"]] + op["data"] + base[op["off"] + len(op["data"]):])
        else:
            put_data(o, o.data[:op["size"]].ljust(op["size"], "\0"))
        return None
    if k == "touch":  # the model's own: the mtime is no longer known (see mtime_unknown)
        o.mtime = None
    elif k == "chmod":
        o.mode = op["mode"]
    elif k == "utimes":
        o.mtime = op["mtime"]
    elif k == "setxattr":
        if op["create"] and op["name"] in o.xattrs:
            return "EEXIST"
        o.xattrs[op["name"]] = op["value"]
    elif k == "removexattr":
        if op["name"] not in o.xattrs:
            return "ENODATA"
        del o.xattrs[op["name"]]
    else:
        raise ValueError(k)
    return None


# ==== Transactions and conflicts =================================================================


class Holds:
    """What a change touches (or what a transaction holds): objects, names (directory id,
    name), and the same names as path strings (a fallback where a path does not resolve)."""

    def __init__(self):
        self.objs, self.entries, self.paths = set(), set(), set()
        self.subtrees = set()  # directories the change removes, moves or replaces
        self.parents = set()   # directories whose entries the change adds or removes
        self.moved_paths = set()
        # The names above a file with several names, on the path the change named it by: the
        # daemon is given the file, not the path, and checks the names above whichever name it
        # knows the file by, so a conflict through these alone may or may not be seen.
        self.via = set()

    def update(self, other):
        self.objs |= other.objs
        self.entries |= other.entries
        self.paths |= other.paths


def op_paths(op):
    return [op[k] for k in ("path", "src", "dst") if k in op]


def touches(t, op):
    """What op, run in view t, would change (computed before it runs)."""
    h = Holds()
    k = op["op"]
    if k == "rename" and t.lookup(op["src"]) is not None and \
            t.lookup(op["src"]) == t.lookup(op["dst"]):
        return h  # two names of one object (or one name twice): POSIX changes nothing
    for p in op_paths(op):
        h.paths.add(p)
        along = t.entries_along(p)
        oid = t.lookup(p)
        if oid is not None and t.objs[oid].kind != "d" and t.nlink(oid) > 1:
            h.entries.add(along[-1])
            h.via.update(along[:-1])
        else:
            h.entries.update(along)
        if oid is not None and not (k == "link" and p == op["dst"]):
            h.objs.add(oid)
        if k in ("rmdir", "rename") and oid is not None and t.objs[oid].kind == "d":
            h.subtrees.add(oid)
            h.moved_paths.add(p)
        if k in ("create", "mkdir", "rmdir", "unlink", "rename") or (k == "link" and
                                                                      p == op["dst"]):
            pid = t.lookup(parent_path(p))
            if pid is not None:
                h.parents.add(pid)
    return h


def held_by_op(t, op, new_id):
    """What a successful op of a transaction, run in its view t, makes it hold."""
    h = Holds()
    k = op["op"]
    if k == "rename" and t.lookup(op["src"]) == t.lookup(op["dst"]):
        return h  # two names of one object: nothing changes
    for p in op_paths(op):
        h.paths.add(p)
        err, parent, name, oid = t.walk(p)
        if k in ("create", "mkdir", "rmdir", "unlink", "rename") or (k == "link" and
                                                                      p == op["dst"]):
            h.entries.add((parent, name))
        if oid is not None:
            h.objs.add(oid)
    if k in ("create", "mkdir"):
        h.objs.add(new_id)
    return h


class Tx:
    def __init__(self, actor, committed):
        self.actor = actor
        self.log = []        # its successful ops, with the ids of what they created
        self.holds = Holds()
        self.view = committed.clone()
        # A file with several names before the transaction can be changed through one of them
        # only (fs/TRANSACTIONS.md, limits): the commit of a transaction that used two is
        # refused with EINVAL. Per such file, the committed names its operations named it by.
        self.names_used = {}

    def uses_two_names_of_one_file(self):
        return any(len(v) > 1 for v in self.names_used.values())


def conflict(tx, t, touch):
    """How op (its touch set, in view t) conflicts with live transaction tx: "strict" (EBUSY
    is the only right answer), "soft" (EBUSY or success), "weak" (only the path strings
    overlap: EBUSY is acceptable where the operation fails anyway) or None."""
    held = tx.holds
    if touch.entries & held.entries or touch.objs & held.objs:
        return "strict"
    several_names = False
    for d in touch.subtrees:
        below = t.subtree(d)
        if any(parent in below for parent, _ in held.entries):
            return "strict"
        objs = held.objs & below
        if any(t.objs[o].kind == "d" or t.nlink(o) == 1 for o in objs):
            return "strict"
        # A file with several names, one of them below: the daemon knows where it holds the
        # file by the name it found it at, which may be outside (see Holds.via).
        several_names = several_names or bool(objs)
    if several_names:
        return "soft"
    if touch.parents & held.objs:
        return "soft"  # a directory tx changed (mode, xattrs) gets or loses a name
    if touch.via & held.entries:
        return "soft"  # see Holds.via
    for p in touch.paths:
        if any(p == h or is_below(p, h) for h in held.paths):
            return "weak"
    for m in touch.moved_paths:
        if any(is_below(h, m) for h in held.paths):
            return "weak"
    return None


class ModelError(Exception):
    """The model cannot follow what happened (reported as such, with the trace)."""


class Model:
    """The committed tree, the live transactions, and what each actor should see."""

    def __init__(self, links=True):
        self.committed, self.next_id = initial_tree(links)
        self.txs = {}  # actor -> Tx
        self.holders = []  # who holds what the last expected change touches
        # The backing filesystem is full (--disk-mb): any change may get ENOSPC and then has no
        # effect (two-step ones say how far they got); a commit may be refused with ENOSPC and
        # is then rolled back wholly; a rollback never fails.
        self.full = False

    def view(self, actor):
        tx = self.txs.get(actor)
        return tx.view if tx else self.committed

    def expect(self, actor, op):
        """The results op may have: (accepted set, POSIX result, its kind of conflict)."""
        accept, posix, kind = self.expect_when_space(actor, op)
        if self.full and op["op"] != "rollback" and "ANY-ERROR" not in accept:
            accept = accept | {"ENOSPC"}
        return accept, posix, kind

    def expect_when_space(self, actor, op):
        k = op["op"]
        if k == "begin":
            return ({"EBUSY"} if actor in self.txs else {"OK"}), None, None
        if k == "commit" and actor in self.txs and self.txs[actor].uses_two_names_of_one_file():
            return {"EINVAL"}, None, None
        if k in ("commit", "rollback"):
            return ({"OK"} if actor in self.txs else {"ANY-ERROR"}), None, None
        t = self.view(actor)
        trial = t.clone()
        err = apply_op(trial, op, self.next_id)
        touch = touches(t, op)
        found = {a: conflict(tx, t, touch) for a, tx in self.txs.items() if a != actor}
        self.holders = sorted(a for a, c in found.items() if c == "strict")
        kinds = set(found.values())
        kind = ("strict" if "strict" in kinds else "soft" if "soft" in kinds
                else "weak" if "weak" in kinds else None)
        if err:
            accept = {err} | ({"EBUSY"} if kind else set())
        elif kind == "strict":
            accept = {"EBUSY"}
        elif kind == "soft":
            accept = {"OK", "EBUSY"}
        else:
            accept = {"OK"}
        return accept, err or "OK", kind

    def apply(self, actor, op):
        """Follows a successful op."""
        k = op["op"]
        if k == "begin":
            self.txs[actor] = Tx(actor, self.committed)
            return
        if k == "rollback":
            del self.txs[actor]
            return
        if k == "commit":
            self.committed = self.txs.pop(actor).view
            self.replay_txs()
            return
        new_id = self.next_id
        self.next_id += 1
        logged = dict(op, new_id=new_id)
        tx = self.txs.get(actor)
        if tx:
            if k == "rename" and tx.view.lookup(op["src"]) == tx.view.lookup(op["dst"]):
                return  # two names of one object (or one name twice): nothing to replay
            tx.holds.update(held_by_op(tx.view, op, new_id))
            self.note_names_used(tx, op)
            if k in CONTENT_OPS:
                # The transaction holds the object, not the path: a file with several names
                # may be moved by another actor through a name the daemon does not know the
                # transaction by (the "soft" conflict), and the change follows the object.
                logged["oid"] = tx.view.lookup(op["path"])
            if apply_op(tx.view, op, new_id):
                raise ModelError(f"{op_text(op)} succeeded but fails in the model")
            tx.log.append(logged)
        else:
            if apply_op(self.committed, op, new_id):
                raise ModelError(f"{op_text(op)} succeeded but fails in the model")
            self.replay_txs()

    def note_names_used(self, tx, op):
        if op["op"] == "rename" and tx.view.lookup(op["src"]) == tx.view.lookup(op["dst"]):
            return  # two names of one object: nothing changes, nothing is logged
        for p in op_paths(op):
            err, parent, name, oid = tx.view.walk(p)
            if err or oid is None or parent not in self.committed.objs:
                continue
            if self.committed.objs[parent].children.get(name) != oid:
                continue  # not a name the file had before the transaction
            if self.committed.nlink(oid) > 1:
                tx.names_used.setdefault(oid, set()).add((parent, name))

    def mtime_unknown(self, actor, path):
        """A write that failed with ENOSPC may have stamped the file's mtime first, as Linux
        does natively (file_modified comes before the data is copied)."""
        oid = self.view(actor).lookup(path)
        if oid is None:
            return
        op = {"op": "touch", "path": path, "new_id": 0, "oid": oid}
        tx = self.txs.get(actor)
        apply_op(tx.view if tx else self.committed, op, 0, oid)
        if tx:
            tx.log.append(op)  # replayed with the rest of the transaction
        else:
            self.replay_txs()

    def commit_refused(self, actor):
        """The daemon refused the commit (and rolled the transaction back)."""
        self.txs.pop(actor, None)

    def replay_txs(self):
        """Each live transaction's view is the new committed tree plus its own changes. The
        conflict rules keep them apart; a change that fails on replay means they did not."""
        for a, tx in self.txs.items():
            view = self.committed.clone()
            for op in tx.log:
                err = apply_op(view, op, op["new_id"], op.get("oid"))
                if err:
                    raise ModelError(f"{a}'s change {op_text(op)} no longer applies ({err}) on "
                                     "the new committed tree: a change by another actor went "
                                     "through where the rules say EBUSY")
            tx.view = view

    def drop_txs(self):
        self.txs = {}


# ==== Generating operations =====================================================================


def op_text(op):
    k = op["op"]
    if k == "rename":
        fl = {0: "", RENAME_NOREPLACE: " NOREPLACE", RENAME_EXCHANGE: " EXCHANGE"}[op["flags"]]
        return f"rename{fl} {op['src']} -> {op['dst']}"
    if k == "link":
        return f"link {op['src']} -> {op['dst']}"
    if k in ("begin", "commit", "rollback"):
        return k
    extra = ""
    if k in ("create", "overwrite", "append"):
        extra = f" {op['data']!r}"
    elif k == "write":
        extra = f" @{op['off']} {op['data']!r}"
    elif k == "truncate":
        extra = f" {op['size']}"
    elif k == "chmod":
        extra = f" {op['mode']:o}"
    elif k == "utimes":
        extra = f" mtime={op['mtime'] // 10**9}s"
    elif k == "setxattr":
        extra = f" {op['name']}={op['value']!r}{' CREATE' if op['create'] else ''}"
    elif k == "removexattr":
        extra = f" {op['name']}"
    return f"{k} {op['path']}{extra}"


OP_WEIGHTS = {"create": 8, "overwrite": 5, "write": 7, "append": 4, "truncate": 3, "mkdir": 6,
              "rmdir": 6, "unlink": 6, "rename": 12, "link": 5, "chmod": 2, "utimes": 2,
              "setxattr": 3, "removexattr": 2}


class Generator:
    def __init__(self, rng, model, skip=()):
        self.rng, self.model = rng, model
        self.tag = 0
        self.kinds = [k for k in OP_WEIGHTS if k not in skip]

    def data(self):
        self.tag += 1
        return self.rng.choice("ABCDEFGH") * self.rng.randint(1, 3) + str(self.tag)

    def all_paths(self, actor):
        """Paths in the actor's view, and (to aim at others' changes) in every view."""
        mine = self.model.view(actor).paths()
        union = dict(mine)
        for t in [self.model.committed] + [tx.view for tx in self.model.txs.values()]:
            union.update(dict(t.paths()))
        return mine, sorted(union.items())

    def pick(self, actor, kind=None, prefer=None):
        """An existing path: mostly in the actor's view, sometimes one only others see."""
        mine, union = self.all_paths(actor)
        pool = mine if self.rng.random() < 0.75 else union
        cands = [p for p, k in pool if kind is None or k == kind]
        if prefer:
            pref = [p for p in cands if prefer(p)]
            if pref and self.rng.random() < 0.8:
                cands = pref
        return self.rng.choice(cands) if cands else self.rng.choice(NAMES)

    def new_path(self, actor):
        """A directory (of any view) and a name from the small pool: often taken already."""
        mine, union = self.all_paths(actor)
        dirs = [p for p, k in (mine if self.rng.random() < 0.7 else union) if k == "d"]
        dirs = [d for d in dirs if d.count("/") < 2] + [""]
        parent = self.rng.choice(dirs)
        name = self.rng.choice(NAMES)
        return f"{parent}/{name}" if parent else name

    def op(self, actor, transactional):
        tx, rng = self.model.txs.get(actor), self.rng
        if transactional:
            if tx is None and rng.random() < 0.6:
                return {"op": "begin"}
            if tx is not None:
                r = rng.random()
                if r < 0.07:
                    return {"op": "commit"}
                if r < 0.09:
                    return {"op": "rollback"}
        kinds = self.kinds
        size = len(self.model.view(actor).objs)
        weights = [OP_WEIGHTS[k] * (2 if size > 40 and k in ("rmdir", "unlink") else 1)
                   * (2 if size < 10 and k in ("create", "mkdir") else 1) for k in kinds]
        k = rng.choices(kinds, weights)[0]
        return getattr(self, "gen_" + k, self.gen_content)(actor, k)

    def is_empty_dir(self, actor):
        t = self.model.view(actor)
        return lambda p: t.lookup(p) is not None and not t.objs[t.lookup(p)].children

    def gen_content(self, actor, k):
        rng = self.rng
        op = {"op": k, "path": self.pick(actor, "f")}
        if k in ("overwrite", "append"):
            op["data"] = self.data()
        elif k == "write":
            op.update(off=rng.randint(0, 6), data=self.data())
        elif k == "truncate":
            op["size"] = rng.randint(0, 6)
        return op

    def gen_create(self, actor, k):
        return {"op": "create", "path": self.new_path(actor), "data": self.data()}

    def gen_mkdir(self, actor, k):
        return {"op": "mkdir", "path": self.new_path(actor)}

    def gen_rmdir(self, actor, k):
        return {"op": "rmdir", "path": self.pick(actor, "d", self.is_empty_dir(actor))}

    def gen_unlink(self, actor, k):
        return {"op": "unlink", "path": self.pick(actor, "f")}

    def gen_rename(self, actor, k):
        rng = self.rng
        src = self.pick(actor)
        dst = self.pick(actor) if rng.random() < 0.4 else self.new_path(actor)
        flags = rng.choices([0, RENAME_NOREPLACE, RENAME_EXCHANGE], [70, 15, 15])[0]
        return {"op": "rename", "src": src, "dst": dst, "flags": flags}

    def gen_link(self, actor, k):
        return {"op": "link", "src": self.pick(actor, "f"), "dst": self.new_path(actor)}

    def gen_chmod(self, actor, k):
        p = self.pick(actor)
        t = self.model.view(actor)
        oid = t.lookup(p)
        is_dir = oid is not None and t.objs[oid].kind == "d"
        return {"op": "chmod", "path": p,
                "mode": self.rng.choice(DIR_MODES if is_dir else FILE_MODES)}

    def gen_utimes(self, actor, k):
        return {"op": "utimes", "path": self.pick(actor), "mtime": self.rng.randint(1, 999) * 10**9}

    def gen_setxattr(self, actor, k):
        return {"op": "setxattr", "path": self.pick(actor), "name": self.rng.choice(XATTRS),
                "value": self.data(), "create": self.rng.random() < 0.2}

    def gen_removexattr(self, actor, k):
        return {"op": "removexattr", "path": self.pick(actor), "name": self.rng.choice(XATTRS)}


# ==== Processes: the daemon and the actors ======================================================




class Failure(Exception):
    def __init__(self, kind, text, sig=None):
        super().__init__(f"{kind}: {text}")
        self.kind = kind
        self.sig = sig or kind  # what a shrunk trace must still show


class Daemon:
    """One ktmfs daemon at a time on one mount point; kill() and stop() leave nothing behind."""

    def __init__(self, ktmfs, options, backing, mnt, log, pidfile=None):
        self.ktmfs, self.options, self.backing, self.mnt, self.log = (ktmfs, options, backing,
                                                                     mnt, log)
        self.pidfile = pidfile  # for an outside clean-up (the regress runner's), if we are killed
        self.proc = None
        self.conn = None

    def start(self, why):
        cmd = [self.ktmfs, "-f"] + (["-o", self.options] if self.options else [])
        cmd += [self.backing, self.mnt]
        with open(self.log, "a") as dl:
            dl.write(f"--- {why}: {' '.join(cmd)}\n")
            dl.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=dl, stderr=dl,
                                         start_new_session=True)
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                f.write(f"{self.proc.pid}\n")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            self.conn = mount_device(self.mnt)
            if self.conn is not None:
                return
            if self.proc.poll() is not None:
                status, self.proc = self.proc.returncode, None
                self.forget_pid()
                raise Failure("mount", f"the daemon exited with status {status} instead of "
                              f"mounting ({why}):\n{self.log_tail()}")
            time.sleep(0.01)
        self.kill()
        raise Failure("mount", f"the mount did not come up within 20 s ({why}):\n"
                      + self.log_tail())

    def log_tail(self, n=12):
        try:
            with open(self.log, errors="replace") as f:
                return "".join("    " + line for line in f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def abort_connection(self):
        abort_connection(mount_device(self.mnt) or self.conn)

    def kill(self):
        """SIGKILLs the daemon (aborting its connection if it cannot die) and unmounts."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.abort_connection()
                    try:
                        self.proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        pass
            self.proc = None
        self.unmount(lazy_after=50)
        self.forget_pid()

    def forget_pid(self):
        if self.pidfile and os.path.exists(self.pidfile):
            os.unlink(self.pidfile)

    def unmount(self, lazy_after):
        for _ in range(lazy_after):
            if mount_device(self.mnt) is None:
                return True
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
            if mount_device(self.mnt) is not None:
                time.sleep(0.1)
        if mount_device(self.mnt) is not None:
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], stderr=subprocess.DEVNULL)
            return False
        return True

    def stop(self):
        """Unmounts cleanly; raises if the mount stays busy or the daemon exits badly."""
        problem = None
        if not self.unmount(lazy_after=50):
            problem = "the mount stayed busy at unmount"
        if self.proc is not None:
            try:
                status = self.proc.wait(timeout=30)
                if status != 0 and not problem:
                    problem = f"the daemon exited with status {status} after the unmount"
            except subprocess.TimeoutExpired:
                problem = problem or "the daemon did not exit within 30 s of the unmount"
        self.kill()
        if problem:
            raise Failure("unmount", problem + ":\n" + self.log_tail())


class Agent:
    """One actor's process, driven one JSON line at a time."""

    def __init__(self, name, top, timeout):
        self.name, self.timeout = name, timeout
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--agent", top],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""

    def call(self, op):
        try:
            self.proc.stdin.write((json.dumps(op) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            raise Failure("actor", f"{self.name} is gone")
        end = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise Failure("hang", f"{self.name} got no answer to {op_text_any(op)} "
                              f"within {self.timeout:.0f} s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise Failure("actor", f"{self.name} died during {op_text_any(op)}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def op_text_any(op):
    if op["op"] == "look":
        return "look " + " ".join(p or "/" for p in op["paths"])
    if op["op"] == "tree":
        return "a walk of the tree"
    return op_text(op)


# ==== One run: a seed's steps against the mount and the model ====================================


def diff_desc(want, got):
    """What differs between the model's and the mount's description of one path."""
    if "err" in want or "err" in got:
        def what(d):
            return d.get("err") or {"f": "a file", "d": "a directory"}.get(d.get("type"), "?")
        return None if want.get("err") == got.get("err") else (
            f"expected {what(want)}, got {what(got)}")
    out = []
    for key in ("type", "mode", "size", "nlink", "data", "entries", "xattrs", "mtime"):
        if key not in want or (key == "mtime" and want[key] is None):
            continue
        if want[key] != got.get(key):
            w, g = want[key], got.get(key)
            if key == "mode":
                w, g = oct(w), oct(g) if isinstance(g, int) else g
            out.append(f"{key} {w!r} (model) != {g!r}")
    return "; ".join(out) or None


class Run:
    """Runs steps (generated from a seed, or a given list when replaying) and checks each."""

    def __init__(self, cfg, seed, workdir, steps=None, log=None):
        self.cfg, self.seed, self.workdir = cfg, seed, workdir
        self.given = steps
        self.logf = log
        self.rng = random.Random(seed)
        self.look_rng = random.Random(seed ^ 0x5eed)  # which actors look: apart, for replays
        self.model = Model(links="link" not in cfg.skip)
        self.trace = []  # (step text, expected, got) per step
        self.steps = []  # what ran: ("op", actor, op) or ("kill",)
        self.actors = [f"t{i + 1}" for i in range(cfg.tx_actors)] + \
                      [f"p{i + 1}" for i in range(cfg.plain_actors)]
        self.agents = {}
        self.daemon = None
        self.uncertain = {}

    def log(self, text):
        if self.logf:
            self.logf.write(text + "\n")

    # -- set-up and tear-down --

    def setup(self):
        cfg = self.cfg
        self.backing = cfg.backing or os.path.join(cfg.disk or self.workdir, "backing")
        self.mnt = cfg.mnt or os.path.join(self.workdir, "mnt")
        for d in (self.backing, self.mnt):
            if mount_device(d) is not None:
                raise Failure("setup", f"{d} is mounted")
            os.makedirs(d, exist_ok=True)
            for name in os.listdir(d):  # each seed starts from a fresh backing directory
                q = os.path.join(d, name)
                shutil.rmtree(q) if os.path.isdir(q) and not os.path.islink(q) else os.unlink(q)
        make_initial_tree(self.backing, links="link" not in cfg.skip)
        if cfg.native:
            self.mnt = self.backing
        else:
            self.daemon = Daemon(cfg.ktmfs, cfg.options, self.backing, self.mnt,
                                 cfg.daemon_log or os.path.join(self.workdir, "daemon.log"),
                                 cfg.pidfile)
            self.daemon.start("mount")
        self.start_agents()

    def start_agents(self):
        for a in self.actors:
            self.agents[a] = Agent(a, self.mnt, self.cfg.op_timeout)

    def stop_agents(self):
        for ag in self.agents.values():
            ag.stop()
        self.agents = {}

    def teardown(self):
        # The daemon first: an actor waiting on a hung daemon cannot die before it.
        if self.daemon:
            self.daemon.kill()
        self.stop_agents()

    # -- the steps --

    def run(self):
        """Returns None, or the Failure (with self.trace and self.steps saying how)."""
        try:
            self.setup()
            n = len(self.given) if self.given is not None else self.cfg.steps
            for i in range(n):
                step = self.given[i] if self.given is not None else self.next_step()
                self.steps.append(step)
                if step[0] == "kill":
                    self.kill_and_remount(i)
                elif step[0] in ("fill", "drain"):
                    self.fill(i) if step[0] == "fill" else self.drain(i)
                else:
                    self.do_op(i, step[1], step[2])
                if i % self.cfg.full_every == self.cfg.full_every - 1:
                    self.check_all_views(i)
            self.check_all_views(n)
            self.finish()
            return None
        except Failure as f:
            return f
        except ModelError as e:
            return Failure("model", str(e))
        finally:
            self.teardown()

    def next_step(self):
        rng = self.rng
        if not self.cfg.native and self.cfg.kill_rate and rng.random() < self.cfg.kill_rate:
            return ("kill",)
        if self.cfg.disk and rng.random() < self.cfg.fill_rate:
            return ("drain",) if self.model.full else ("fill",)
        if not hasattr(self, "gen"):
            self.gen = Generator(rng, self.model, self.cfg.skip)
        actor = rng.choice(self.actors)
        transactional = actor.startswith("t") and not self.cfg.native
        return ("op", actor, self.gen.op(actor, transactional))

    def who(self, actor):
        return f"{actor}{'(tx)' if actor in self.model.txs else ''}"

    def do_op(self, i, actor, op):
        accept, posix, kind = self.model.expect(actor, op)
        text = f"#{i} {self.who(actor)}: {op_text(op)}"
        answer = self.agents[actor].call(op)
        got = answer["r"]
        self.trace.append((text, "|".join(sorted(accept)), got))
        self.log(f"{text}: expect {'|'.join(sorted(accept))}, got {got}")
        ok = got in accept or ("ANY-ERROR" in accept and got != "OK")
        if not ok:
            self.judge(i, actor, op, accept, posix, kind, got)
            if got != "EBUSY":
                return
        elif len(accept) > 1 and got == "EBUSY" and posix == "OK":
            self.note_uncertain(f"{op['op']}: EBUSY where only a directory the other "
                                "transaction changed is involved")
        if got == "OK" and "ANY-ERROR" not in accept:
            self.model.apply(actor, op)
        elif op["op"] == "commit" and got in ("EINVAL", "ENOSPC") and ok:
            self.model.commit_refused(actor)
        elif got == "ENOSPC" and ok and answer.get("partial"):
            self.model.apply(actor, dict(op, data=""))  # created or truncated, then no space
        elif got == "ENOSPC" and ok and op["op"] in ("write", "append", "overwrite", "truncate"):
            self.model.mtime_unknown(actor, op["path"])
        self.check_daemon(text)
        if op["op"] in ("commit", "rollback"):
            # Where the bugs are: the whole tree, seen by the actor (now outside) and another.
            others = [a for a in self.actors if a != actor]
            self.check_all_views(i, [actor] + ([self.look_rng.choice(others)] if others else []))
        self.check_views(i, actor, op)

    def judge(self, i, actor, op, accept, posix, kind, got):
        want = "|".join(sorted(accept))
        if accept == {"EBUSY"} and got == "OK" and kind == "strict":
            raise Failure("missed EBUSY", f"step #{i}: {actor} {op_text(op)} succeeded, but "
                          f"it changes what the live transaction of "
                          f"{' and '.join(self.model.holders)} holds")
        if got == "EBUSY" and not self.cfg.strict_ebusy:
            # An EBUSY the rules do not call for: noted, not a failure; the model follows.
            self.note_uncertain(f"{op['op']}: spurious EBUSY")
            return
        if op["op"] == "commit" and actor in self.model.txs:
            raise Failure("commit", f"step #{i}: {actor}'s commit failed with {got}")
        raise Failure("result", f"step #{i}: {actor} {op_text(op)}: expected {want}, got {got}")

    def note_uncertain(self, what):
        self.uncertain[what] = self.uncertain.get(what, 0) + 1
        self.log(f"  (model uncertain: {what})")

    def check_daemon(self, text):
        if self.daemon and not self.daemon.alive():
            raise Failure("daemon", f"the daemon died during {text}:\n{self.daemon.log_tail()}")

    # -- views --

    def lookers(self, actor, op):
        """Who reads after a step: everyone when a transaction begins or ends, else the actor
        and one other, an outsider if the actor is inside (reading costs, and whatever one
        misses the next step's reader may see)."""
        if op["op"] in ("begin", "commit", "rollback"):
            return self.actors
        others = [a for a in self.actors if a != actor]
        if actor in self.model.txs:
            others = [a for a in others if a not in self.model.txs] or others
        return [actor] + ([self.look_rng.choice(others)] if others else [])

    def check_views(self, i, actor, op):
        paths = {""}
        for p in op_paths(op):
            paths.add(p)
            paths.add(parent_path(p))
        paths = sorted(paths)
        for a in self.lookers(actor, op):
            got = self.agents[a].call({"op": "look", "paths": paths})["v"]
            t = self.model.view(a)
            for p in paths:
                self.compare(i, a, p, t.describe(p), got[p])

    def check_all_views(self, i, actors=None):
        for a in actors or self.actors:
            got = self.agents[a].call({"op": "tree"})["v"]
            want = self.model.view(a).describe_all()
            failures = []
            for p in sorted(set(want) | set(got)):
                try:
                    self.compare(i, a, p, want.get(p, {"err": "ENOENT"}),
                                 got.get(p, {"err": "ENOENT"}))
                except Failure as f:
                    failures.append(f)
            if failures:  # the first, with what else differs
                f = failures[0]
                more = [str(g).split(" sees ", 1)[-1] for g in failures[1:6]]
                raise Failure(f.kind, str(f).split(": ", 1)[1]
                              + "".join(f"\n    and {m}" for m in more), sig=f.sig)

    def compare(self, i, actor, path, want, got):
        if "EBUSY" in got.get("err", ""):
            raise Failure("read EBUSY", f"after step #{i}: {actor} reading {path or '/'} got "
                          f"{got['err']}")
        d = diff_desc(want, got)
        if d:
            where = "inside its transaction" if actor in self.model.txs else "outside"
            raise Failure("view", f"after step #{i}: {actor} ({where}) sees {path or '/'} "
                          f"wrong: {d}", sig=f"view {path} {d.split(' ', 1)[0]}")

    # -- a full disk (--disk-mb) --

    def filler(self):
        return os.path.join(self.cfg.disk, "filler")

    def fill(self, i):
        """Takes every free block of the backing filesystem (the daemon is root: the disk is
        made without reserved blocks, so there is nothing left for it either)."""
        text = f"#{i} fill the disk"
        self.trace.append((text, "", ""))
        self.log(text)
        fd = os.open(self.filler(), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12):
                while True:
                    try:
                        os.posix_fallocate(fd, os.fstat(fd).st_size, chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
            block = b"\0" * 4096
            os.lseek(fd, 0, os.SEEK_END)
            while True:  # what fallocate could not take in whole blocks
                try:
                    os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
            os.fsync(fd)
        finally:
            os.close(fd)
        st = os.statvfs(self.cfg.disk)
        self.log(f"  {st.f_bfree} blocks free")
        self.model.full = True

    def drain(self, i):
        text = f"#{i} free the disk"
        self.trace.append((text, "", ""))
        self.log(text)
        if os.path.exists(self.filler()):
            os.unlink(self.filler())
        os.sync()  # ext4 reuses the blocks after its journal commits
        self.model.full = False

    # -- kills --

    def kill_and_remount(self, i):
        text = f"#{i} SIGKILL the daemon and remount"
        self.trace.append((text, "mount", ""))
        self.log(text)
        self.daemon.kill()
        self.stop_agents()
        self.model.drop_txs()
        self.daemon.start(f"remount after the kill at step #{i}")
        self.start_agents()
        self.trace[-1] = (text, "mount", "mounted")
        self.check_all_views(i, actors=[self.actors[-1]])

    def finish(self):
        """A clean unmount; the backing tree must be the committed one; it mounts again."""
        if self.cfg.native:
            return
        if self.model.full:
            self.drain(len(self.steps))
        self.stop_agents()
        self.trace.append(("end: unmount, compare the backing tree, mount again", "", ""))
        self.daemon.stop()
        self.model.drop_txs()
        want = self.model.committed.describe_all()
        got = agent_tree(self.backing)
        got[""]["entries"] = [e for e in got[""]["entries"] if e != ".ktmfs"]
        got = {p: d for p, d in got.items() if p != ".ktmfs" and not p.startswith(".ktmfs/")}
        for p in sorted(set(want) | set(got)):
            d = diff_desc(want.get(p, {"err": "ENOENT"}), got.get(p, {"err": "ENOENT"}))
            if d:
                raise Failure("backing", f"after the unmount the backing directory has "
                              f"{p or '/'} wrong: {d}")
        self.daemon.start("the mount after the end")
        self.start_agents()
        self.check_all_views(len(self.steps), actors=[self.actors[-1]])
        self.stop_agents()
        self.daemon.stop()


# ==== Shrinking ==================================================================================


def shrink(cfg, run, failure, workdir, deadline):
    """Delta debugging: the shortest list of steps (found before the deadline) that still fails
    the same way (same kind; for a view, the same path and detail). Returns (failure, run) or
    None."""
    def fails(cand):
        if time.monotonic() > deadline or not cand:
            return None
        r = Run(cfg, 0, workdir, steps=cand)
        f = r.run()
        return (f, r) if f is not None and f.sig == failure.sig else None

    def without_failed_steps(steps, r):
        """Drops the steps that failed (they should change nothing) if it still fails."""
        kept = [s for s, (_, _, got) in zip(steps, r.trace) if s[0] != "op" or got == "OK"]
        res = fails(kept) if len(kept) < len(steps) else None
        return (kept, res) if res else (steps, None)

    best, best_run = run.steps, None
    # Quick passes first: without the failed steps, then without each actor's steps.
    cand, res = without_failed_steps(best, run)
    if res:
        best, best_run = cand, res
    for a in sorted({s[1] for s in best if s[0] == "op"}):
        cand = [s for s in best if s[0] != "op" or s[1] != a]
        res = fails(cand)
        if res:
            best, best_run = cand, res
    best, best_run = ddmin(best, best_run, fails, deadline)
    if best_run:
        cand, res = without_failed_steps(best, best_run[1])
        if res:
            best_run = res
    return best_run


def ddmin(best, best_run, fails, deadline):
    n = 2
    while len(best) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(best) // n)
        reduced = False
        for start in range(0, len(best), chunk):
            cand = best[:start] + best[start + chunk:]
            res = fails(cand)
            if res:
                best, best_run = cand, res
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(best), n * 2)
    return best, best_run


# ==== The command line ==========================================================================


def report(run, failure, seed, cfg, steps_file, shrunk=None):
    out = [f"txcheck: FAILED (seed {seed}): {failure}"]
    show = shrunk or (run, failure)
    r, f = show
    if shrunk:
        out.append(f"shrunk from {len(run.steps)} to {len(r.steps)} steps: {f}")
    out.append("trace (step: expected -> got):")
    for text, want, got in r.trace:
        out.append(f"  {text}: {want} -> {got}" if want or got else f"  {text}")
    with open(steps_file, "w") as f:
        json.dump(r.steps, f)
        f.write("\n")
    disk = f" --disk-mb {cfg.disk_mb}" if cfg.disk_mb else ""
    if not cfg.replay:
        skip = f" --skip-ops {','.join(cfg.skip)}" if cfg.skip else ""
        fill = f" --fill-rate {cfg.fill_rate}" if cfg.disk_mb else ""
        out.append(f"again: txcheck.py --build BUILD --seed {seed} --steps {cfg.steps} "
                   f"--actors {cfg.tx_actors},{cfg.plain_actors} --kill-rate {cfg.kill_rate}"
                   + disk + fill + skip)
    out.append(f"these steps alone: txcheck.py --build BUILD --actors "
               f"{cfg.tx_actors},{cfg.plain_actors}{disk} --replay {steps_file}")
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agent", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--build", default=os.environ.get("KTMFS_BUILD"),
                   help="the build directory with fs/ktmfs (default $KTMFS_BUILD)")
    p.add_argument("--seed", type=int, help="the first seed (default: random)")
    p.add_argument("--seeds", type=int, default=1, help="how many seeds, one after another")
    p.add_argument("--minutes", type=float, help="keep running new seeds this long")
    p.add_argument("--steps", type=int, default=300, help="steps per seed")
    p.add_argument("--actors", default="3,2",
                   help="TX,PLAIN: transactional and plain actors (default 3,2)")
    p.add_argument("--kill-rate", type=float, default=0.0,
                   help="probability per step of SIGKILLing the daemon and remounting")
    p.add_argument("--disk-mb", type=int, default=0,
                   help="put the backing directory on an ext4 loop filesystem of this size "
                   "(root only), which --fill-rate fills and frees")
    p.add_argument("--fill-rate", type=float, default=0.02,
                   help="with --disk-mb: probability per step of filling the disk (or of "
                   "freeing it when full)")
    p.add_argument("--tmpdir", default=os.environ.get("TMPDIR", "/tmp"))
    p.add_argument("--options", default=os.environ.get("KTMFS_MOUNT_OPTIONS",
                                                       "allow_other,default_permissions"))
    p.add_argument("--full-every", type=int, default=20, help="whole-tree check every N steps")
    p.add_argument("--strict-ebusy", action="store_true",
                   help="an EBUSY the rules do not call for is a failure (default: noted)")
    p.add_argument("--shrink-seconds", type=float, default=120,
                   help="time to spend shrinking a failing trace (0: none)")
    p.add_argument("--op-timeout", type=float, default=30)
    p.add_argument("--skip-ops", default="",
                   help="operation kinds to leave out, comma-separated (" + ", ".join(OP_WEIGHTS)
                   + "): to look past a known bug")
    p.add_argument("--replay", metavar="FILE",
                   help="run the steps in FILE (JSON, written by a failure report)")
    p.add_argument("--native", metavar="DIR",
                   help="no daemon: plain actors only in DIR (checks the model against Linux)")
    p.add_argument("--log", help="a detailed log of every step")
    p.add_argument("--backing", help="the backing directory to use (emptied for each seed; "
                   "default: one under --tmpdir)")
    p.add_argument("--mnt", help="the mount point to use (default: one under --tmpdir)")
    p.add_argument("--daemon-log", help="the daemons' stderr (default: in the work directory)")
    p.add_argument("--pidfile", help="keeps the running daemon's pid, for an outside clean-up")
    args = p.parse_args(argv)
    if args.agent:
        return args
    try:
        args.tx_actors, args.plain_actors = (int(x) for x in args.actors.split(","))
    except ValueError:
        p.error("--actors TX,PLAIN")
    if args.native:
        args.tx_actors, args.plain_actors = 0, args.tx_actors + args.plain_actors
    else:
        if not args.build:
            p.error("--build (or $KTMFS_BUILD) is needed")
        args.ktmfs = os.path.join(args.build, "fs", "ktmfs")
        if not os.access(args.ktmfs, os.X_OK):
            p.error(f"no daemon at {args.ktmfs}")
    args.skip = [k for k in args.skip_ops.split(",") if k]
    if any(k not in OP_WEIGHTS for k in args.skip):
        p.error(f"--skip-ops: one of {', '.join(OP_WEIGHTS)}")
    for k in ("backing", "mnt"):
        if getattr(args, k):
            setattr(args, k, os.path.realpath(getattr(args, k)))
    if args.tx_actors + args.plain_actors < 1:
        p.error("no actors")
    if args.disk_mb and (args.native or args.backing):
        p.error("--disk-mb makes the backing directory itself: not with --native or --backing")
    if args.disk_mb and os.geteuid() != 0:
        p.error("--disk-mb needs root (it mounts a loop filesystem)")
    args.disk = None  # its mount point, once made
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(31)
    return args


def make_disk(cfg, workdir):
    """An ext4 loop filesystem of cfg.disk_mb MiB without reserved blocks, mounted in workdir."""
    image, disk = os.path.join(workdir, "disk.img"), os.path.join(workdir, "disk")
    os.makedirs(disk)
    with open(image, "wb") as f:
        f.truncate(cfg.disk_mb << 20)
    for cmd in (["mkfs.ext4", "-q", "-F", "-m", "0", image], ["mount", "-o", "loop", image, disk]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {r.stdout.strip()}")
    cfg.disk = disk


def remove_disk(cfg):
    if cfg.disk and mount_device(cfg.disk) is not None:
        if subprocess.run(["umount", cfg.disk], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", cfg.disk])  # the loop device goes when it is free
    cfg.disk = None


def main(argv):
    cfg = parse_args(argv)
    if cfg.agent:
        return agent_main(cfg.agent)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    logf = open(cfg.log, "a") if cfg.log else None
    if cfg.native:
        workdir = cfg.native
        if os.listdir(workdir):
            print(f"txcheck: {workdir} is not empty", file=sys.stderr)
            return 2
    else:
        workdir = tempfile.mkdtemp(prefix="txcheck.", dir=cfg.tmpdir)
    if cfg.disk_mb:
        try:
            make_disk(cfg, workdir)
        except OSError as e:
            print(f"txcheck: {e}", file=sys.stderr)
            remove_disk(cfg)
            shutil.rmtree(workdir, ignore_errors=True)
            return 2
    end = time.monotonic() + cfg.minutes * 60 if cfg.minutes else None
    seeds = steps = 0
    uncertain = {}
    keep = False
    try:
        seed = cfg.seed
        while True:
            given = None
            if cfg.replay:
                with open(cfg.replay) as f:
                    given = [tuple(s) for s in json.load(f)]
                if not cfg.disk and any(s[0] in ("fill", "drain") for s in given):
                    print("txcheck: these steps fill a disk: replay them with --disk-mb",
                          file=sys.stderr)
                    return 2
            if logf:
                logf.write(f"=== seed {seed}\n")
            run = Run(cfg, seed, workdir if not cfg.native else os.path.join(workdir, "w"),
                      steps=given, log=logf)
            if cfg.native:
                os.makedirs(run.workdir, exist_ok=True)
            failure = run.run()
            seeds += 1
            steps += len(run.steps)
            for k, v in run.uncertain.items():
                uncertain[k] = uncertain.get(k, 0) + v
            if failure:
                shrunk = None
                if cfg.shrink_seconds > 0 and not cfg.native and len(run.steps) > 1:
                    shrunk = shrink(cfg, run, failure, workdir,
                                    time.monotonic() + cfg.shrink_seconds)
                    shrunk = (shrunk[1], shrunk[0]) if shrunk else None
                # The steps go next to the log if there is one (a runner may remove workdir).
                steps_file = (f"{cfg.log}.steps-{seed}.json" if cfg.log
                              else os.path.join(workdir, f"steps-{seed}.json"))
                text = report(run, failure, seed, cfg, steps_file, shrunk)
                print(text)
                if logf:
                    logf.write(text + "\n")
                keep = True
                return 1
            if cfg.replay or (end is None and seeds >= cfg.seeds) or (end and time.monotonic() > end):
                break
            seed += 1
    except KeyboardInterrupt:
        print("txcheck: interrupted", file=sys.stderr)
        return 130
    finally:
        remove_disk(cfg)
        if logf:
            for k, v in sorted(uncertain.items()):
                logf.write(f"model uncertain: {k}: {v} times\n")
            logf.close()
        if not keep and not cfg.native:
            shutil.rmtree(workdir, ignore_errors=True)
        elif keep and not cfg.native:
            print(f"(the daemon's log: {cfg.daemon_log or workdir + '/daemon.log'})")
    print(f"txcheck: {seeds} seeds, {steps} steps: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

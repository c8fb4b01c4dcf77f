#!/usr/bin/env python3
"""Holds the source tree to its layers (fs/README.md): a file includes only its own folder and
the folders below it, nothing below fs/fuse includes a FUSE header, and replies go to libfuse
from one file only (fs/fuse/reply.cc): the operations return them.

Usage: layering_check.py SOURCE_ROOT
Prints each include that breaks a rule, with the file and line, and exits 1 if there is one.
"""
import pathlib
import re
import sys

# Bottom first. A folder may include itself and anything earlier in this list.
LAYERS = [
    "log",
    "src",
    "fs/mount",
    "fs/control",
    "fs/tx",
    "fs/fuse",
    "fs/service",
    "fs/ops",
    "fs/daemon",
]
# Where a FUSE header may first appear: this layer and those above it.
FIRST_FUSE_LAYER = "fs/fuse"
# Folders of the tree that are not layers of the product but may include product headers.
UNLAYERED = ("tools", "tests")
# The one file that calls libfuse's fuse_reply_* functions.
REPLIES_FROM = "fs/fuse/reply.cc"
REPLY_CALL = re.compile(r"\bfuse_reply_[a-z_]+\s*\(")

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def layer_of(path):
    """The longest layer that is a prefix of `path` (a path from the source root)."""
    best = None
    for layer in LAYERS:
        if path == layer or path.startswith(layer + "/"):
            if best is None or len(layer) > len(best):
                best = layer
    return best


def main():
    root = pathlib.Path(sys.argv[1]).resolve()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    fuse_rank = rank[FIRST_FUSE_LAYER]
    broken = []
    checked = 0
    for file in sorted(root.rglob("*")):
        if file.suffix not in (".h", ".cc", ".c") or not file.is_file():
            continue
        rel = file.relative_to(root).as_posix()
        if rel.startswith(UNLAYERED) or rel.startswith("build"):
            continue
        mine = layer_of(rel)
        if mine is None:
            if rel.startswith("fs/"):
                broken.append(f"{rel}: in fs/ but in no layer (fs/ holds only the folders)")
            continue
        checked += 1
        for n, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            if rel != REPLIES_FROM and REPLY_CALL.search(line.split("//", 1)[0]):
                broken.append(f"{rel}:{n}: replies to libfuse itself (operations return a Reply,"
                              f" {REPLIES_FROM} sends it)")
            m = INCLUDE.match(line)
            if not m:
                continue
            kind, target = m.groups()
            if kind == "<":
                if target.startswith("fuse") and rank[mine] < fuse_rank:
                    broken.append(f"{rel}:{n}: includes <{target}> below {FIRST_FUSE_LAYER}")
                continue
            theirs = layer_of(target)
            if theirs is None:
                if target.startswith("fs/"):
                    broken.append(f"{rel}:{n}: includes {target}, which is in no layer")
                continue
            if rank[theirs] > rank[mine]:
                broken.append(f"{rel}:{n}: {mine} includes {target} from {theirs}, a layer above it")
    for b in broken:
        print(b)
    if checked == 0:
        print(f"no source files found under {root}")
        return 1
    print(f"{checked} files checked, {len(broken)} lines against the layers")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

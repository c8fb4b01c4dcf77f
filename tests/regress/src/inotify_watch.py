#!/usr/bin/env python3
"""inotify_watch.py DIR STOP READY: watches DIR for names created, deleted and moved, prints one
line per event ("CREATE name"), and exits after the event that names STOP. READY is created
once the watch is set, so a test can wait for it. Gives up (exit 1) after 60 s."""
import ctypes
import os
import select
import struct
import sys
import time

IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
NAMES = [(IN_CREATE, "CREATE"), (IN_DELETE, "DELETE"), (IN_MOVED_FROM, "MOVED_FROM"),
         (IN_MOVED_TO, "MOVED_TO")]


def main():
    directory, stop, ready = sys.argv[1:4]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, directory.encode(),
                                        IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) < 0:
        print(f"inotify on {directory}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    open(ready, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        buf = os.read(fd, 65536)
        i = 0
        while i < len(buf):
            _, mask, _, length = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode()
            i += 16 + length
            kinds = " ".join(k for bit, k in NAMES if mask & bit)
            print(f"{kinds} {name}", flush=True)
            if name == stop:
                return 0
    print(f"no event for {stop} in 60 s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""odirect_toggle.py FILE WRITES PROGRESS: buffered 100-byte writes into partial pages of FILE, WRITES of
them, while a child process sharing the open file toggles O_DIRECT on it with fcntl as fast as
it can. A FUSE WRITE carries the file's flags at the time it is sent, so some buffered writes,
whose pages stay locked until the daemon answers, reach it marked O_DIRECT. Writes the number
of writes done so far to the file PROGRESS every 10 writes, so a caller can tell a hang from
slowness, and prints how many were done at the end; the point is that it returns at all."""
import fcntl
import os
import sys


def main():
    path, writes, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 64 * 4096)
    pid = os.fork()
    if pid == 0:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        while os.getppid() != 1:
            flags ^= os.O_DIRECT
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        os._exit(0)
    failed = 0
    for k in range(writes):
        if k % 10 == 0:
            with open(progress, "w") as f:
                f.write(f"{k}\n")
        try:
            os.pwrite(fd, b"x" * 100, (k % 64) * 4096 + 10)
        except OSError:
            failed += 1
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print(f"{writes} writes, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the regression suite's Python harnesses (crashwork.py, txcheck.py) share about FUSE
mounts: whether a directory is mounted, its connection, and aborting a connection whose daemon
cannot die."""

import os
import subprocess

FUSECTL = "/sys/fs/fuse/connections"


def mount_device(mnt):
    """The minor device number of the mount on mnt (the FUSE connection's id), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return fields[2].split(":")[1]
    return None


def mounted(mnt):
    return mount_device(mnt) is not None


def abort_connection(conn):
    """Aborts FUSE connection conn through fusectl (mounting fusectl if need be); says what
    happened."""
    if conn is None:
        return "no FUSE connection to abort"
    if not os.path.exists(f"{FUSECTL}/{conn}"):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], stderr=subprocess.DEVNULL)
    try:
        with open(f"{FUSECTL}/{conn}/abort", "w") as f:
            f.write("1")
        return f"aborted FUSE connection {conn}"
    except OSError as e:
        return f"could not abort FUSE connection {conn}: {e}"

#!/usr/bin/env python3
"""syslog_listen.py SOCKET OUT: stands in for the system logger. Binds a datagram socket at
SOCKET (/dev/log, where syslog(3) sends), and appends each message to OUT as
"<priority> <tag>: <text>", the tag without its pid (the header's time and host dropped), until
it is killed. Gives up after 120 s."""
import os
import re
import socket
import sys
import time

HEADER = re.compile(r"^<(\d+)>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?([^\[:]+)(?:\[\d+\])?: ?(.*)$",
                    re.S)


def main():
    path, out = sys.argv[1:3]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)
    s.settimeout(0.5)
    deadline = time.monotonic() + 120
    with open(out, "a", buffering=1) as f:
        f.write("ready\n")
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536).decode(errors="replace").rstrip("\n\0")
            except socket.timeout:
                continue
            m = HEADER.match(data)
            if m:
                f.write(f"<{int(m.group(1)) & 7}> {m.group(2)}: {m.group(3)}\n")
            else:
                f.write(f"? {data}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ExaBGP's API process: ``python -m bgp.helper SOCKET_PATH`` (the speaker runs this file as
``python -I -S .../bgp/helper.py SOCKET_PATH``: no site, no import of meshgate, fast start).

Connects to the controller's unix socket, then relays bytes as they come: ExaBGP's output to
us (stdin: events, acks) to the socket, the socket (commands) to our stdout. Nothing is
buffered, so every line ExaBGP or the controller wrote whole is passed on whole at once.
Exits as soon as either side closes: ExaBGP exiting, or the controller dying (its end of
the socket closes), or any error. Standard library only.
"""

from __future__ import annotations

import os
import select
import socket
import sys

CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    """Until either side reaches end of file (or fails)."""
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == stdin:
                data = os.read(stdin, CHUNK)
                if not data:
                    return
                sock.sendall(data)
            else:
                data = sock.recv(CHUNK)
                if not data:
                    return
                _write_all(stdout, data)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m bgp.helper SOCKET_PATH\n")
        return 2
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(argv[1])
    except OSError as exc:
        sys.stderr.write(f"meshgate bgp helper: cannot connect to {argv[1]}: {exc}\n")
        return 1
    try:
        relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    except OSError:
        return 1
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

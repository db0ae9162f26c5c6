"""A TLS server process for the probe tests: ``python pki_tls_server.py CHAIN KEY MODE``.

MODE ``hardened`` builds its context with ``meshgate.pki.tls.server_context``; MODE ``permissive``
uses an ordinary context open to TLS 1.0+, every cipher and OpenSSL's default groups (the control
that shows a probe can succeed). Prints the port, answers each handshake with ``hello`` and exits
when its stdin closes.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
from pathlib import Path

from meshgate.pki.tls import server_context


def _context(chain: Path, key: Path, mode: str) -> ssl.SSLContext:
    if mode == "hardened":
        return server_context(chain.read_bytes(), key.read_bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(chain, key)
    return context


def _handle(context: ssl.SSLContext, conn: socket.socket) -> None:
    conn.settimeout(10)
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello\n")
            tls.unwrap()  # close_notify, so the probe ends cleanly
    except (OSError, ssl.SSLError):
        pass


def _exit_on_stdin_eof() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


def main() -> None:
    chain, key, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    context = _context(chain, key, mode)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(context, conn), daemon=True).start()


if __name__ == "__main__":
    main()

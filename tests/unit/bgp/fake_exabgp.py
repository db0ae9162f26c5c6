"""A stand-in for ``exabgp`` (``validate CONF`` / ``server CONF``) for the speaker's unit tests.

``server`` reads the ``run`` line and the neighbors of the configuration, starts the API process
as ExaBGP does (pipes, own process group), says each neighbor is connected then up (JSON lines of
the 5.0 shape), answers every command with ``done`` and records it in ``commands.log`` next to
the configuration. ``fake.json`` beside this program changes that: ``{"validate": "refuse"}``, ``{"answer":
"error" | "silent"}``, ``{"up_after": SECONDS}`` (sessions come up that late, and until then a
route for a neighbor is refused, as ExaBGP 5.0.15 refuses ``next-hop self`` for a session whose
local address it does not know yet). On SIGTERM it says each session is down, stops
the API process and exits, as ExaBGP does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


def state(peer: str, state: str, reason: str = "") -> str:
    extra = f', "reason": "{reason}"' if reason else ""
    return (
        f'{{ "exabgp": "5.0.0", "time": {time.time()}, "host" : "fake", "pid" : {os.getpid()}, '
        f'"ppid" : {os.getppid()}, "counter": 1, "type": "state", "neighbor": {{ "address": '
        f'{{ "local": "None", "peer": "{peer}" }}, "asn": {{ "local": 65000, "peer": 65001 }}, '
        f'"router-id": "192.0.2.1" , "state": "{state}"{extra} }} }}'
    )


def main() -> int:
    command, conf = sys.argv[1], Path(sys.argv[2])
    text = conf.read_text()
    knobs = Path(sys.argv[0]).with_name("fake.json")
    options = json.loads(knobs.read_text()) if knobs.exists() else {}
    if command == "validate":
        if options.get("validate") == "refuse":
            sys.stderr.write("error: exabgp.conf is not a valid config file: \nfake refusal\n")
            return 1
        return 0
    run = re.search(r"^\s*run (.*);$", text, re.M)
    assert run is not None
    peers = re.findall(r"^neighbor (\S+) \{$", text, re.M)
    helper = subprocess.Popen(
        run.group(1).split(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0
    )
    assert helper.stdin is not None
    assert helper.stdout is not None
    (conf.parent / "fake-helper.pid").write_text(str(helper.pid))
    log = (conf.parent / "commands.log").open("a")

    def say(line: str) -> None:
        assert helper.stdin is not None
        helper.stdin.write(line.encode() + b"\n")
        helper.stdin.flush()

    def stop(*_: object) -> None:
        # a signal handler: it may interrupt say() or helper.wait() in the loop, so it takes no
        # lock of theirs (a second wait() would deadlock on Popen's) and leaves at once
        with contextlib.suppress(OSError):
            os.write(
                helper.stdin.fileno(),
                "".join(state(p, "down", "shutting down") + "\n" for p in peers).encode(),
            )
        helper.terminate()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    up_at = time.monotonic() + float(options.get("up_after", 0))
    up = False
    buffer = b""
    while True:
        if not up and time.monotonic() >= up_at:
            for peer in peers:
                say(state(peer, "connected"))
                say(state(peer, "up"))
            up = True
        timeout = None if up else max(0.0, up_at - time.monotonic())
        if not select.select([helper.stdout], [], [], timeout)[0]:
            continue
        data = os.read(helper.stdout.fileno(), 65536)
        if not data:  # the API process is gone: ExaBGP 5 keeps running (and announcing)
            helper.wait()
            signal.pause()
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            log.write(line.decode() + "\n")
            log.flush()
            answer = options.get("answer", "done")
            if not up and line.startswith(b"neighbor ") and b" announce route " in line:
                answer = "error"
            if answer != "silent":
                say(answer)


if __name__ == "__main__":
    sys.exit(main())

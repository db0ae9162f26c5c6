"""``meshgate demo --lab`` (root): labs/two-region on network namespaces, with BGP.

Brings the lab up (``meshgate lab up``), runs its checks, prints how to look around (a curl from
each region's client to the anycast VIP, the routers' routes, the edges' status), then waits for
Ctrl-C and brings the lab down, leaving nothing behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "labs" / "two-region"
VIP = "203.0.113.10"
HOST = "web.two-region.lab"


def find_lab(directory: Path | None = None) -> Path:
    lab = directory or LAB
    if not (lab / "topology.clab.yml").is_file():
        raise FileNotFoundError(
            f"{lab}/topology.clab.yml not found: --lab runs labs/two-region of a meshgate checkout"
        )
    return lab


def run_lab_demo(lab: Path, *, once: bool, echo: Callable[[str], None]) -> int:
    """Up, check, show, wait for Ctrl-C (unless ``once``), down. The exit status."""
    from meshgate.lab.check_run import render_table, run_checks
    from meshgate.lab.checks import load_checks
    from meshgate.lab.lifecycle import down, up
    from meshgate.lab.progress import make_progress

    if os.geteuid() != 0:
        echo("meshgate demo --lab needs root (network namespaces, BGP); without it: meshgate demo")
        return 5
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        echo(f"meshgate demo --lab: bringing up {lab} (15 nodes, BIRD and FRR, ExaBGP on the edges)")
        progress = make_progress(sys.stdout, echo)
        try:
            running = up(lab, progress=progress, cleanup_on_failure=True)
        finally:
            progress.close()
        results = run_checks(running, load_checks((lab / "checks.yml").read_text()))
        echo(render_table(results))
        if not all(result.passed for result in results):
            echo(f"some checks failed (above); the node logs are in {lab}/clab-two-region/<node>/")
            return 1
        echo(
            "\nThe anycast VIP from each region's client (the edge and zone that served it are in "
            "the X-Meshgate-* headers):\n"
            f"  meshgate lab exec {lab} client-eu -- curl -si -H 'Host: {HOST}' http://{VIP}/\n"
            f"  meshgate lab exec {lab} client-us -- curl -si -H 'Host: {HOST}' http://{VIP}/\n"
            "The routers' view and the mesh's:\n"
            f"  meshgate lab exec {lab} rtr-eu -- birdc -s /run/bird/bird.ctl show route for {VIP} all\n"
            f"  meshgate lab exec {lab} rtr-us -- vtysh --vty_socket /run/frr -c 'show ip bgp {VIP}/32'\n"
            f"  meshgate lab exec {lab} global -- meshgate get zones\n"
            f"  meshgate lab exec {lab} global -- meshgate edge status\n"
            "Failures under load, with figures:\n"
            f"  meshgate lab scenario {lab} --list\n"
            f"  meshgate lab scenario {lab} edge-drain --pin\n"
        )
        if once:
            return 0
        echo("Press Ctrl-C to bring the lab down.")
        stop.wait()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo(f"bringing {lab.name} down...")
        down(lab)
        echo("the lab is down: no namespace, process or mount of it is left")

"""A minimal edge controller for the BGP speaker's integration tests: ``python -m
tests.support.speaker_process CONFIG_JSON`` (run from the repository root, in an edge namespace).

Starts a ``bgp.speaker.Speaker`` with ``{"bgp": spec.bgp, "workdir": ..., "vip": ...}`` (with
``"unchecked": true``, settings built without ``settings_from_spec``: what ExaBGP alone refuses),
announces the VIP (if any) and prints one JSON line: ``{"ready": true, ...}`` with the PIDs of
ExaBGP and its helper, or ``{"ready": false, "kind": "ConfigInvalid", "error": ...}``. Then it
answers JSON commands read from stdin, one per line, with one JSON line each::

    {"op": "announce", "prefix": P, "med": 0, "communities": [...], "prepend": 0,
     "graceful_shutdown": false}
    {"op": "withdraw", "prefix": P}
    {"op": "status"}

and stops the speaker when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bgp.commands import RouteAttributes
from bgp.exabgp_config import ConfigInvalid
from bgp.settings import BgpSettings, Neighbor, settings_from_spec
from bgp.speaker import Speaker, SpeakerError


def say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def status(speaker: Speaker) -> dict[str, Any]:
    run = speaker._run
    helper = run.helper.pid if run is not None and run.helper is not None else None
    return {
        "running": speaker.running,
        "restarts": speaker.restarts,
        "exabgp_pid": run.proc.pid if run is not None else None,
        "helper_pid": helper,
        "announced": sorted(speaker.announced),
        "established": speaker.neighbors.established(),
        "neighbors": [
            {"address": n.address, "state": n.state, "reason": n.reason, "flaps": n.flaps}
            for n in speaker.neighbors
        ],
        "metrics": speaker.metric_lines(),
    }


async def serve(speaker: Speaker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        started = time.monotonic()
        try:
            if request["op"] == "announce":
                attrs = RouteAttributes(
                    med=request.get("med", 0),
                    communities=tuple(request.get("communities", ())),
                    prepend=request.get("prepend", 0),
                    graceful_shutdown=request.get("graceful_shutdown", False),
                )
                await speaker.announce(request["prefix"], attrs)
            elif request["op"] == "withdraw":
                await speaker.withdraw(request["prefix"])
            say({"ok": True, "took": time.monotonic() - started, **status(speaker)})
        except (SpeakerError, ValueError) as exc:
            say({"ok": False, "error": str(exc), **status(speaker)})


def unchecked(bgp: dict[str, Any]) -> BgpSettings:
    neighbors = tuple(Neighbor(n["address"], n["peerASN"], n.get("localAddress")) for n in bgp["neighbors"])
    return BgpSettings(bgp["localASN"], bgp["routerID"], bgp.get("holdTime", 90), neighbors)


async def main(config: dict[str, Any]) -> int:
    settings = unchecked(config["bgp"]) if config.get("unchecked") else settings_from_spec(config["bgp"])
    speaker = Speaker(settings, Path(config["workdir"]))
    started = time.monotonic()
    try:
        await speaker.start()
    except (ConfigInvalid, SpeakerError) as exc:
        say({"ready": False, "kind": type(exc).__name__, "error": str(exc)})
        return 1
    try:
        took = time.monotonic() - started
        if config.get("vip"):
            await speaker.announce(config["vip"], RouteAttributes(med=0, communities=("65100:1",)))
        say({"ready": True, "start": took, **status(speaker)})
        await serve(speaker)
    finally:
        await speaker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))

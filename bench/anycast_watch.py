"""What the ``anycast`` scenario watches on the routers while a lab scenario runs: the moment the
edge's path is gone from each router's BGP table (a withdraw, or the session dropped with a
killed edge), and the moment a draining edge's path carries GRACEFUL_SHUTDOWN.

``WatchedLab`` is the running lab as ``meshgate.lab.scenario_run`` uses it; it notes when the
scenario acts (the first node killed, or ``meshgate edge drain`` run) and starts the watches
then, each polling its router in a thread of its own until its condition holds.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from meshgate.lab.running import RunningLab, RunningNode

VIP: Final = "203.0.113.10"
PREFIX: Final = f"{VIP}/32"
#: labs/two-region: edge-eu (AS 65101) peers with rtr-eu (BIRD, protocol edge_eu); rtr-us (FRR)
#: learns its path through rtr-eu (AS path 65001 65101)
EDGE_EU_ASN: Final = "65101"
BIRD_PROTOCOL: Final = "edge_eu"
BIRD: Final = ["birdc", "-s", "/run/bird/bird.ctl", "show", "route", "for", PREFIX, "all"]
FRR: Final = ["vtysh", "--vty_socket", "/run/frr", "-c", f"show ip bgp {PREFIX} json"]
WATCH_TIMEOUT: Final = 60.0


# --- reading the routers (no I/O) ------------------------------------------------------------------


def bird_routes(text: str) -> dict[str, list[str]]:
    """``birdc show route for P all`` as protocol -> that route's lines (BGP attributes included).
    A route starts with a line naming its protocol in brackets (``unicast [edge_eu ...]``)."""
    routes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if "unicast [" in line:
            protocol = line.split("unicast [", 1)[1].split()[0].rstrip("]")
            current = routes.setdefault(protocol, [])
        if current is not None:
            current.append(line.strip())
    return routes


def bird_has_edge_path(text: str) -> bool:
    return BIRD_PROTOCOL in bird_routes(text)


def bird_edge_path_gshut(text: str) -> bool:
    """The edge's path carries GRACEFUL_SHUTDOWN (community 65535:0)."""
    lines = bird_routes(text).get(BIRD_PROTOCOL, [])
    return any("community" in line and "(65535,0)" in line.replace(" ", "") for line in lines)


def frr_paths(text: str) -> list[Mapping[str, Any]]:
    try:
        decoded = json.loads(text or "{}")
    except ValueError:
        return []
    paths = decoded.get("paths", []) if isinstance(decoded, dict) else []
    return [p for p in paths if isinstance(p, dict)]


def frr_has_edge_path(text: str) -> bool:
    """rtr-us holds a path through edge-eu (its AS in the path)."""
    for path in frr_paths(text):
        aspath = path.get("aspath")
        string = aspath.get("string", "") if isinstance(aspath, dict) else str(aspath or "")
        if EDGE_EU_ASN in string.split():
            return True
    return False


# --- watching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """A figure: seconds from the action until ``reached(stdout of argv in node)``."""

    figure: str
    node: str
    argv: Sequence[str]
    reached: Callable[[str], bool]


def edge_path_gone(figure: str) -> list[Watch]:
    """The edge's path gone at rtr-eu (its own router) and at rtr-us (the other region's)."""
    return [
        Watch(f"{figure}_rtr_eu_s", "rtr-eu", BIRD, lambda out: not bird_has_edge_path(out)),
        Watch(f"{figure}_rtr_us_s", "rtr-us", FRR, lambda out: not frr_has_edge_path(out)),
    ]


#: what to watch in each lab scenario the benchmark runs
WATCHES: Final[dict[str, list[Watch]]] = {
    "edge-failure": edge_path_gone("route_gone"),
    # (not rtr-us: it loses edge-eu's path as soon as rtr-eu prefers its path over the draining
    # one, before the withdraw, since rtr-eu passes on its best path only)
    "edge-drain": [
        Watch("graceful_shutdown_rtr_eu_s", "rtr-eu", BIRD, bird_edge_path_gshut),
        Watch("withdrawn_rtr_eu_s", "rtr-eu", BIRD, lambda out: not bird_has_edge_path(out)),
    ],
    "zone-failure": [],
}


class Watcher:
    """One thread per watch, polling from ``started`` (monotonic) until reached, stopped or
    ``timeout``; ``figures()`` gives seconds (the end of the first poll that saw it), the
    resolution (that poll's end less the previous poll's start) and the number of polls; or,
    for a change not seen, how long it was watched (and the error if the router could not be
    read)."""

    def __init__(
        self, lab: RunningLab, watches: Sequence[Watch], started: float, timeout: float = WATCH_TIMEOUT
    ):
        self._lab, self._started, self._timeout = lab, started, timeout
        self._stop = threading.Event()
        self._results: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._poll, args=(w,), daemon=True) for w in watches]
        for thread in self._threads:
            thread.start()

    def _poll(self, watch: Watch) -> None:
        previous = self._started
        polls = 0
        last_error = ""
        result: dict[str, Any]
        while True:
            begun = time.monotonic()
            try:
                done = self._lab.exec(watch.node, list(watch.argv), timeout=10)
                seen = done.returncode == 0 and watch.reached(done.stdout)
            except (subprocess.TimeoutExpired, OSError) as exc:
                seen, done = False, None
                last_error = str(exc)
            polls += 1
            ended = time.monotonic()
            if seen:
                result = {
                    "s": round(ended - self._started, 3),
                    "resolution_s": round(ended - previous, 3),
                    "polls": polls,
                }
                break
            if done is not None and done.returncode != 0:
                last_error = (done.stderr or done.stdout).strip()[-200:]
            if self._stop.is_set() or ended - self._started > self._timeout:
                # not seen while watched: the time is at least this (a censored figure)
                result = {"s": None, "polls": polls, "not_seen_after_s": round(ended - self._started, 3)}
                if done is None or done.returncode:
                    result["error"] = last_error or "the router could not be read"
                break
            previous = begun
            time.sleep(0.02)
        with self._lock:
            self._results[watch.figure] = result

    def finished(self) -> bool:
        """Whether every watch has ended (reached, or timed out)."""
        return not any(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """Stop polling (what was not reached yet is reported as such) and return the figures."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            return dict(self._results)


class WatchedLab:
    """The running lab as a scenario uses it (``ScenarioLab``), starting ``watches`` when the
    scenario acts: at the first ``kill_node``, or at ``meshgate edge drain`` run in a node."""

    def __init__(self, lab: RunningLab, watches: Sequence[Watch]) -> None:
        self._lab = lab
        self._watches = list(watches)
        self.watcher: Watcher | None = None

    @property
    def nodes(self) -> Mapping[str, RunningNode]:
        return self._lab.nodes

    def netns(self, node: str, /) -> str:
        return self._lab.netns(node)

    def exec(
        self, node: str, argv: list[str], /, *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if list(argv[:3]) == ["meshgate", "edge", "drain"]:
            self._acting()
        return self._lab.exec(node, argv, timeout=timeout, input=input)

    def kill_node(self, node: str, /, *, signal: int) -> None:
        self._acting()
        self._lab.kill_node(node, signal=signal)

    def start_node(self, node: str, /) -> None:
        self._lab.start_node(node)

    def _acting(self) -> None:
        if self._watches and self.watcher is None:
            self.watcher = Watcher(self._lab, self._watches, time.monotonic())

    def figures(self) -> dict[str, dict[str, Any]]:
        return self.watcher.stop() if self.watcher is not None else {}

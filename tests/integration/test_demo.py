"""``meshgate demo`` as a user runs it: the README's first command, every component a real
process. Run with ``--once`` (exit 0, the URLs printed), then for real: the printed ``curl``
commands answered by each region's edge from its own region, Ctrl-C stopping every process the
demo started; a SIGKILLed demo takes its processes with it; a process that cannot start is named.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import MESHGATE, wait_for

pytestmark = pytest.mark.slow

START = 120  # seconds: the demo's own start-up deadline is 90 s
STOP = 40
HOSTNAME = "www.demo.meshgate.test"
REGIONS = {"edge-eu-west-1": "eu-west", "edge-us-east-1": "us-east"}


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MESHGATE_")}


class Demo:
    """``meshgate demo`` in the background, its output read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*MESHGATE, "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env()
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> str:
        """The first line from now on matching ``pattern``; fails at EOF or after ``timeout``."""

        def next_match() -> str | None:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                return None
            if line is None:
                raise AssertionError(
                    f"the demo ended ({self.proc.poll()}) before {pattern!r}:\n{self.output}"
                )
            self.lines.append(line)
            return line if re.search(pattern, line) else None

        found: str = wait_for(next_match, timeout, f"{pattern!r} in the demo's output", interval=0)
        return found

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    try:
        yield started
    finally:
        for demo in started:
            demo.stop()


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (from /proc), each with its start time (so a reused PID is
    not mistaken for it)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = starts[child]
        todo += parents.get(child, [])
    return found


def alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` still running (the same process: same start time; not a zombie)."""
    out = {}
    for pid, start in processes.items():
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, *rest = text.rpartition(")")[2].split()
        if rest[18] == start and state != "Z":
            out[pid] = " ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0"))
    return out


def running_in(data_dir: Path) -> list[str]:
    """Command lines of running processes naming ``data_dir`` (each of the demo's processes does),
    wherever they are in the process tree."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        line = " ".join(a.decode(errors="replace") for a in argv)
        if str(data_dir) in line and state != "Z" and entry.name != str(os.getpid()):
            found.append(f"{entry.name}: {line}")
    return found


def printed_edges(output: str) -> dict[str, tuple[str, str]]:
    """Edge name -> its http and https URLs, as the demo printed them."""
    edges = re.findall(r"^edge (\S+) \(region (\S+)\)  (http://\S+)  (https://\S+)$", output, re.M)
    assert {name: region for name, region, _, _ in edges} == REGIONS, output
    return {name: (http, https) for name, _, http, https in edges}


def printed_curls(output: str) -> list[list[str]]:
    return [shlex.split(line) for line in output.splitlines() if line.strip().startswith("curl ")]


def run_curl(argv: list[str]) -> tuple[int, dict[str, str], str]:
    assert argv[0] == "curl"
    assert not {"-k", "--insecure"} & set(argv)  # the demo's CA is enough
    done = subprocess.run(
        [*argv, "-sS", "-i", "--max-time", "10"], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, (argv, done.stderr)
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_once_brings_the_mesh_up_prints_how_to_reach_it_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [*MESHGATE, "demo", "--once", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=START + STOP, env=env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "meshgate demo: ready in" in out
    url = re.search(r"^global CP  (http://127\.0\.0\.1:\d+)  \(store: SQLite", out, re.M)
    assert url is not None, out
    token_file = tmp_path / "global-cp" / "admin-token"
    assert f"export MESHGATE_SERVER={url.group(1)} MESHGATE_TOKEN_FILE={token_file}" in out
    edges = printed_edges(out)
    ports = {int(u.rsplit(":", 1)[1].rstrip("/")) for pair in edges.values() for u in pair}
    assert len(ports) == 4  # two edges, each its own http and https port
    curls = printed_curls(out)
    assert len(curls) == 4
    for http, https in edges.values():
        assert ["curl", "-H", f"Host: {HOSTNAME}", http] in curls
        port = https.rsplit(":", 1)[1].rstrip("/")
        assert ["curl", "--cacert", str(tmp_path / "demo-ca.pem"), "--resolve", f"{HOSTNAME}:{port}:127.0.0.1",
                f"https://{HOSTNAME}:{port}/"] in curls  # fmt: skip
    # The status: both zones syncing with their instances healthy, each edge serving its region.
    for zone in REGIONS.values():
        assert re.search(rf"^  zone {zone} .*: sync connected, .* 2/2 instances healthy", out, re.M), out
    for edge, zone in REGIONS.items():
        assert re.search(rf"^  edge {edge} \({zone}\): 200 from {zone} \(web-{zone}-\d\)", out, re.M), out
    assert out.rstrip().endswith("meshgate demo: stopped")
    logs = {p.name for p in (tmp_path / "logs").iterdir()}
    assert {"global-cp.log", "zone-cp-eu-west.log", "edge-us-east-1.log", "ingress-eu-west.log"} <= logs
    assert len(logs) == 15


def test_a_data_dir_used_before_comes_up_again_on_new_ports(tmp_path: Path) -> None:
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [*MESHGATE, "demo", "--once", "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=START + STOP, env=env(), check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    for edge, zone in REGIONS.items():
        assert re.search(rf"^  edge {edge} \({zone}\): 200 from {zone} ", outputs[1], re.M), outputs[1]


def test_the_printed_curls_work_and_ctrl_c_stops_every_process(tmp_path: Path, demos: list[Demo]) -> None:
    demo = Demo("--data-dir", str(tmp_path))
    demos.append(demo)
    demo.until(r"^meshgate demo: ready in .* Ctrl-C stops everything\.$", START)
    edges = printed_edges(demo.output)
    curls = printed_curls(demo.output)
    assert len(curls) == 4
    for argv in curls:
        url = argv[-1]
        port = url.rsplit(":", 1)[1].rstrip("/")
        (edge,) = [name for name, pair in edges.items() if any(u.endswith(f":{port}/") for u in pair)]
        code, headers, body = run_curl(argv)
        assert code == 200, (argv, headers, body)
        assert headers["x-meshgate-edge"] == edge
        region = REGIONS[edge]
        assert headers["x-meshgate-zone"] == region
        assert headers["x-workload"].startswith(f"web-{region}-")
        assert body == f"hello from {headers['x-workload']} in zone {region}\n"
    # Not a terminal: the live status comes as lines.
    demo.until(r"^status at \d\d:\d\d:\d\d: 15/15 processes running$", 30)
    started = descendants(demo.proc.pid)
    assert len(started) >= 15, started
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(STOP) == 0, demo.output
    demo.until(r"^meshgate demo: stopped$", 10)
    assert alive(started) == {}
    assert running_in(tmp_path) == []
    # Each stopped on its SIGTERM (none killed, none had exited before).
    assert not re.search(r"^meshgate demo: .+: (killed after|stopped \(|had exited)", demo.output, re.M)


def test_a_sigkilled_demo_takes_its_processes_with_it(tmp_path: Path, demos: list[Demo]) -> None:
    demo = Demo("--data-dir", str(tmp_path))
    demos.append(demo)
    demo.until(r"^meshgate demo: ready in ", START)
    started = descendants(demo.proc.pid)
    assert len(started) >= 15, started
    demo.proc.kill()
    demo.proc.wait()
    wait_for(lambda: not alive(started), STOP, "every process of the demo gone after SIGKILL")
    wait_for(lambda: not running_in(tmp_path), STOP, "no process left using the data dir")


def test_ctrl_c_while_starting_stops_what_was_started(tmp_path: Path, demos: list[Demo]) -> None:
    demo = Demo("--data-dir", str(tmp_path))
    demos.append(demo)
    demo.until(r"^ +[\d.]+ s  resources applied; zone CPs .* enrolled$", START)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(STOP) == 0, demo.output
    demo.until(r"^meshgate demo: stopped$", 10)
    assert "meshgate demo: interrupted while starting" in demo.lines
    assert running_in(tmp_path) == []


def test_a_process_that_cannot_start_is_named_with_its_log_and_the_rest_stopped(tmp_path: Path) -> None:
    (tmp_path / "global-cp").write_text("not a directory")  # the global CP's data dir
    done = subprocess.run(
        [*MESHGATE, "demo", "--once", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=START + STOP, env=env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "meshgate demo: global CP failed to start: exited with status" in done.stderr
    assert f"--- the end of {tmp_path / 'logs' / 'global-cp.log'} ---" in done.stderr
    assert done.stdout.rstrip().endswith("meshgate demo: stopped after the failure")

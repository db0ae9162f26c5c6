"""Running checks against a lab: each one retried until it passes or its deadline passes.

A check's attempt is one command inside its node (``ip -j route show exact``, ``curl``, or the
check's own ``argv``); what the command printed is judged by a pure function of the spec and the
output (``verdict``), so everything but ``run_check`` is tested with canned output. Clock and
sleep are injected.
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.table import Table

from meshgate.lab.checks import (
    Check,
    ChecksError,
    CommandSpec,
    HttpSpec,
    MetricSpec,
    RouteSpec,
    Spec,
    unknown_nodes,
)
from meshgate.lab.nodes_protocol import LabNodes

#: one attempt gets at most this long (less when the deadline is nearer, but never under the floor)
ATTEMPT_TIMEOUT: Final = 5.0
ATTEMPT_TIMEOUT_FLOOR: Final = 1.0
#: what ``exec`` gets beyond curl's own ``--max-time`` (curl's message is the better one)
EXEC_SLACK: Final = 2.0
SNIPPET: Final = 120

_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Verdict:
    """One attempt's outcome: what was observed and what the check expects."""

    passed: bool
    observed: str
    expected: str

    @property
    def message(self) -> str:
        return self.observed if self.passed else f"{self.observed}, expected {self.expected}"


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome: passed or not, the seconds it took to pass (or until it gave up), the
    attempts made, and the last verdict."""

    check: Check
    passed: bool
    seconds: float
    attempts: int
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.check.name,
            "kind": self.check.kind,
            "node": self.check.node,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
            "observed": self.verdict.observed,
            "expected": self.verdict.expected,
            "detail": self.verdict.message,
        }


# -- the command of an attempt ------------------------------------------------------------------


def command_for(spec: Spec, timeout: float) -> list[str]:
    """The command an attempt runs inside ``spec.node``."""
    if isinstance(spec, RouteSpec):
        family = "-6" if ipaddress.ip_network(spec.prefix).version == 6 else "-4"
        return ["ip", "-j", family, "route", "show", "exact", spec.prefix]
    if isinstance(spec, CommandSpec):
        return list(spec.argv)
    curl = ["curl", "-q", "-sS", "--noproxy", "*", "--max-time", f"{timeout:g}"]
    if isinstance(spec, MetricSpec):
        return [*curl, "--fail", spec.url]
    url, connect_to = spec.url, list[str]()
    if spec.host is not None:
        url, connect_to = _with_host(spec.url, spec.host)
    return [*curl, "-D", "-", "-o", "-", *(["-k"] if spec.insecure else []), *connect_to, url]


def _with_host(url: str, host: str) -> tuple[str, list[str]]:
    """``url`` with ``host`` in it (Host header and SNI), and curl's ``--connect-to`` that still
    sends it to the URL's own address."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.hostname or ""
    if ":" in target:
        target = f"[{target}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), ["--connect-to", f"{host}:{port}:{target}:{port}"]


def expected(spec: Spec) -> str:
    """What ``spec`` expects, for messages (``via 10.1.1.2``, ``status 200``...)."""
    if isinstance(spec, RouteSpec):
        if spec.absent:
            return "no route"
        return f"via {', '.join(spec.via)}" if spec.via else "a route"
    if isinstance(spec, HttpSpec):
        parts = [f"status {spec.status}"]
        parts += [f"{name}: {value}" for name, value in spec.headers.items()]
        if spec.body is not None:
            parts.append(f"body matching /{spec.body.pattern}/")
        return ", ".join(parts)
    if isinstance(spec, MetricSpec):
        return f"{spec.op} {spec.value:g}"
    parts = [f"exit {spec.exit}"]
    if spec.stdout is not None:
        parts.append(f"stdout matching /{spec.stdout.pattern}/")
    return ", ".join(parts)


# -- judging what an attempt printed ------------------------------------------------------------


def verdict(spec: Spec, returncode: int, stdout: str, stderr: str) -> Verdict:
    """Judge one attempt's output against ``spec``."""
    if isinstance(spec, RouteSpec):
        if returncode != 0:
            return Verdict(False, f"ip route failed: {_snippet(stderr or stdout)}", expected(spec))
        try:
            routes = json.loads(stdout or "[]")
        except ValueError:
            return Verdict(False, f"ip route printed no JSON: {_snippet(stdout)}", expected(spec))
        return route_verdict(spec, routes)
    if isinstance(spec, HttpSpec):
        return http_verdict(spec, returncode, stdout, stderr)
    if isinstance(spec, MetricSpec):
        if returncode != 0:
            return Verdict(False, f"scrape failed: {_snippet(stderr or stdout)}", expected(spec))
        return metric_verdict(spec, parse_metrics(stdout))
    return command_verdict(spec, returncode, stdout, stderr)


def route_verdict(spec: RouteSpec, routes: Any) -> Verdict:
    """Judge ``ip -j route show exact PREFIX`` output (decoded): the unicast route with the
    lowest metric is the one in use; its next hops must be exactly ``via`` (in any order)."""
    want = expected(spec)
    usable = [r for r in routes if isinstance(r, dict) and r.get("type", "unicast") == "unicast"]
    others = sorted({str(r.get("type")) for r in routes if isinstance(r, dict)} - {"unicast"})
    if not usable:
        observed = f"no route {spec.prefix}" + (f" (only {', '.join(others)})" if others else "")
        return Verdict(spec.absent, observed, want)
    best = min(usable, key=lambda route: int(route.get("metric", 0)))
    hops = _gateways(best)
    observed = f"route {spec.prefix} " + (
        f"via {', '.join(hops)}" if hops else f"dev {best.get('dev', '?')} (no gateway)"
    )
    if spec.absent:
        return Verdict(False, observed, want)
    if spec.via is None:
        return Verdict(True, observed, want)
    return Verdict(set(hops) == set(spec.via), observed, want)


def _gateways(route: Mapping[str, Any]) -> list[str]:
    hops = route.get("nexthops") or [route]
    found = []
    for hop in hops:
        gateway = hop.get("gateway") or (hop.get("via") or {}).get("host")
        if gateway:
            found.append(str(ipaddress.ip_address(gateway)))
    return found


def http_verdict(spec: HttpSpec, returncode: int, stdout: str, stderr: str) -> Verdict:
    """Judge ``curl -D - -o -`` output: status, headers (names case-insensitive, values exact;
    any of several), body (regex search)."""
    want = expected(spec)
    if returncode != 0:
        return Verdict(False, f"request failed: {_snippet(stderr or stdout)}", want)
    parsed = parse_http_response(stdout)
    if parsed is None:
        return Verdict(False, f"no HTTP response in curl's output: {_snippet(stdout)}", want)
    status, headers, body = parsed
    if status != spec.status:
        return Verdict(False, f"status {status}", want)
    for name, value in spec.headers.items():
        values = headers.get(name, [])
        if value not in values:
            seen = f"{name}: {', '.join(values)}" if values else f"no {name} header"
            return Verdict(False, f"status {status}, {seen}", want)
    if spec.body is not None and spec.body.search(body) is None:
        return Verdict(False, f"status {status}, body {_snippet(body)!r}", want)
    return Verdict(True, f"status {status}" + "".join(f", {n}: {v}" for n, v in spec.headers.items()), want)


def parse_http_response(text: str) -> tuple[int, dict[str, list[str]], str] | None:
    """(status, headers by lower-case name, body) from curl's ``-D -`` then body; interim (1xx)
    responses skipped. None if there is no status line. Lines may end in CRLF or, once read
    in text mode (universal newlines), in LF."""
    rest = text
    while True:
        head, *tail = re.split(r"\r?\n\r?\n", rest, maxsplit=1)
        separator, rest = bool(tail), "".join(tail)
        lines = head.splitlines()
        match = re.match(r"HTTP/\S+ (\d{3})", lines[0] if lines else "")
        if match is None:
            return None
        status = int(match.group(1))
        if 100 <= status < 200 and separator:
            continue
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers, rest


@dataclass(frozen=True)
class Sample:
    """One line of Prometheus text: name, labels, value."""

    name: str
    labels: Mapping[str, str]
    value: float

    def series(self) -> str:
        labels = ",".join(f'{key}="{value}"' for key, value in self.labels.items())
        return f"{self.name}{{{labels}}}" if labels else self.name


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_metrics(text: str) -> list[Sample]:
    """The samples in Prometheus (or OpenMetrics) text; comments and lines that do not parse are
    skipped."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            continue
        name, label_text, value_text = match.groups()
        labels = _parse_labels(label_text or "")
        if labels is None:
            continue
        try:
            value = float(value_text)
        except ValueError:
            continue
        samples.append(Sample(name, labels, value))
    return samples


def _parse_labels(text: str) -> dict[str, str] | None:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            return None
        labels[match.group(1)] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], match.group(2))
        position = match.end()
    return labels


def metric_verdict(spec: MetricSpec, samples: Sequence[Sample]) -> Verdict:
    """Exactly one series named ``spec.name`` whose labels include ``spec.labels``, compared."""
    want = expected(spec)
    wanted = Sample(spec.name, spec.labels, math.nan).series()
    named = [s for s in samples if s.name == spec.name]
    matching = [s for s in named if all(s.labels.get(k) == v for k, v in spec.labels.items())]
    if not matching:
        others = "; ".join(f"{s.series()} {s.value:g}" for s in named[:5])
        return Verdict(False, f"no series {wanted}" + (f" (there are {others})" if others else ""), want)
    if len(matching) > 1:
        found = "; ".join(f"{s.series()} {s.value:g}" for s in matching[:5])
        return Verdict(
            False, f"{len(matching)} series match {wanted} ({found}); add labels to pick one", want
        )
    sample = matching[0]
    return Verdict(_COMPARE[spec.op](sample.value, spec.value), f"{sample.series()} = {sample.value:g}", want)


def command_verdict(spec: CommandSpec, returncode: int, stdout: str, stderr: str) -> Verdict:
    want = expected(spec)
    if returncode != spec.exit:
        output = stderr.strip() or stdout.strip()
        return Verdict(False, f"exit {returncode}" + (f" ({_snippet(output)})" if output else ""), want)
    if spec.stdout is not None and spec.stdout.search(stdout) is None:
        return Verdict(False, f"exit {returncode}, stdout {_snippet(stdout)!r}", want)
    return Verdict(True, f"exit {returncode}", want)


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 1] + "…"


# -- running ------------------------------------------------------------------------------------


def attempt(nodes: LabNodes, spec: Spec, timeout: float) -> Verdict:
    """One attempt of ``spec`` inside its node; never raises for what the node does."""
    slack = 0.0 if isinstance(spec, CommandSpec) else EXEC_SLACK
    try:
        done = nodes.exec(spec.node, command_for(spec, timeout), timeout=timeout + slack)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"no answer within {timeout:g}s", expected(spec))
    except Exception as exc:  # the node gone (a lab error), no such program...: a failed attempt
        return Verdict(False, f"could not run in {spec.node}: {exc}", expected(spec))
    return verdict(spec, done.returncode, done.stdout or "", done.stderr or "")


def run_check(
    nodes: LabNodes,
    check: Check,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """Attempt ``check`` every ``interval`` until it passes or ``deadline`` has passed (one more
    attempt is made at the deadline)."""
    start = clock()
    deadline_at = start + check.deadline
    attempts = 0
    while True:
        attempts += 1
        timeout = min(ATTEMPT_TIMEOUT, max(deadline_at - clock(), ATTEMPT_TIMEOUT_FLOOR))
        outcome = attempt(nodes, check.spec, timeout)
        now = clock()
        if outcome.passed or now >= deadline_at:
            return CheckResult(check, outcome.passed, now - start, attempts, outcome)
        sleep(min(check.interval, deadline_at - now))


class CheckFailed(AssertionError):
    """A check that did not pass by its deadline (``wait_for_check``)."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(
            f"check {result.check.name!r} failed after {result.seconds:.2f}s "
            f"({result.attempts} attempts): {result.verdict.message}"
        )
        self.result = result


def wait_for_check(
    nodes: LabNodes,
    check: Check,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """The seconds ``check`` took to pass; ``CheckFailed`` at its deadline (for scenarios)."""
    result = run_check(nodes, check, clock=clock, sleep=sleep)
    if not result.passed:
        raise CheckFailed(result)
    return result.seconds


def select(checks: Sequence[Check], only: Iterable[str] = ()) -> list[Check]:
    """The checks named in ``only`` (all when empty), in file order; ChecksError for a name
    that is not there."""
    wanted = list(only)
    names = {check.name for check in checks}
    missing = [name for name in wanted if name not in names]
    if missing:
        listed = ", ".join(repr(check.name) for check in checks)
        raise ChecksError([f"--only: no check named {name!r} (checks: {listed})" for name in missing])
    return [check for check in checks if not wanted or check.name in wanted]


def run_checks(
    nodes: LabNodes,
    checks: Sequence[Check],
    *,
    on_result: Callable[[CheckResult], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """Run ``checks`` one after the other, in order; ChecksError first if one names a node the
    lab does not have."""
    violations = unknown_nodes(list(checks), nodes.nodes)
    if violations:
        raise ChecksError(violations)
    results = []
    for check in checks:
        result = run_check(nodes, check, clock=clock, sleep=sleep)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


# -- output -------------------------------------------------------------------------------------


def summary(results: Sequence[CheckResult]) -> str:
    passed = sum(result.passed for result in results)
    return f"{passed} of {len(results)} checks passed"


def describe_time(result: CheckResult) -> str:
    if result.passed:
        return f"{result.seconds:.2f}s"
    return f"gave up after {result.seconds:.2f}s"


def render_table(results: Sequence[CheckResult]) -> str:
    """A table for people: one row per check, then the summary."""
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in ("CHECK", "KIND", "NODE", "RESULT", "TIME", "ATTEMPTS", "DETAIL"):
        grid.add_column(header, no_wrap=True)
    for result in results:
        grid.add_row(
            result.check.name,
            result.check.kind,
            result.check.node,
            "pass" if result.passed else "FAIL",
            describe_time(result),
            str(result.attempts),
            result.verdict.message,
        )
    console = Console(soft_wrap=True, width=10_000, highlight=False, markup=False, color_system=None)
    with console.capture() as captured:
        console.print(grid)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    return "\n".join([*lines, summary(results)])


def render_json(results: Sequence[CheckResult]) -> str:
    return json.dumps(
        {
            "passed": all(result.passed for result in results),
            "summary": summary(results),
            "checks": [result.to_json() for result in results],
        },
        indent=2,
    )

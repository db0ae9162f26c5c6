"""checks.yml: parsing and validation (every violation with its path), durations, the commands an
attempt runs, judging canned output (``ip -j route``, curl, Prometheus text), the retry loop on
a fake lab and an injected clock, and the output."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshgate.cli.lab_check_command import check, check_lab, read_checks
from meshgate.lab.check_run import (
    ATTEMPT_TIMEOUT,
    CheckFailed,
    CheckResult,
    Verdict,
    command_for,
    http_verdict,
    metric_verdict,
    parse_http_response,
    parse_metrics,
    render_json,
    render_table,
    route_verdict,
    run_check,
    run_checks,
    select,
    verdict,
    wait_for_check,
)
from meshgate.lab.checks import (
    Check,
    ChecksError,
    CommandSpec,
    HttpSpec,
    MetricSpec,
    RouteSpec,
    format_duration,
    load_checks,
    parse_checks,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[3]
VIP = "203.0.113.10/32"

EXAMPLE = """
defaults: {deadline: 20s, interval: 250ms}
checks:
  - name: eu router prefers the eu edge for the VIP
    deadline: 30s
    route: {node: rtr-eu, prefix: 203.0.113.10/32, via: [10.1.1.2]}
  - name: an eu client is served by eu-west
    interval: 1s
    http: {node: client-eu, url: "http://203.0.113.10/", host: www.example.test, status: 200,
           headers: {X-Meshgate-Zone: eu-west}, body: "served by .*"}
  - name: the eu edge announces the VIP
    metric: {node: edge-eu, url: "http://127.0.0.1:9901/metrics", name: meshgate_edge_vip_announced,
             labels: {vip: 203.0.113.10}, op: "==", value: 1}
  - name: the us router has its sessions
    command: {node: rtr-us, argv: [birdc, -s, /run/bird/bird.ctl, show, protocols], stdout: Established}
  - name: the VIP is gone from the us router
    deadline: 0s
    route: {node: rtr-us, prefix: 203.0.113.10/32, absent: true}
"""


def violations(text: str) -> list[str]:
    with pytest.raises(ChecksError) as caught:
        load_checks(text)
    return caught.value.violations


def one(text: str) -> Check:
    (found,) = load_checks(text)
    return found


# -- parsing --------------------------------------------------------------------------------------


def test_a_full_checks_file_parses() -> None:
    route, http, metric, command, absent = load_checks(EXAMPLE)
    assert route == Check(
        name="eu router prefers the eu edge for the VIP",
        spec=RouteSpec(node="rtr-eu", prefix=VIP, via=("10.1.1.2",)),
        deadline=30.0,
        interval=0.25,
        index=0,
    )
    assert route.path == "checks[0].route"
    assert isinstance(http.spec, HttpSpec)
    assert (http.deadline, http.interval, http.spec.host, http.spec.status) == (
        20.0,
        1.0,
        "www.example.test",
        200,
    )
    assert http.spec.headers == {"x-meshgate-zone": "eu-west"}  # names are case-insensitive
    assert http.spec.body is not None
    assert http.spec.body.pattern == "served by .*"
    assert metric.spec == MetricSpec(
        node="edge-eu",
        url="http://127.0.0.1:9901/metrics",
        name="meshgate_edge_vip_announced",
        op="==",
        value=1.0,
        labels={"vip": "203.0.113.10"},
    )
    assert isinstance(command.spec, CommandSpec)
    assert command.spec.argv == ("birdc", "-s", "/run/bird/bird.ctl", "show", "protocols")
    assert command.spec.exit == 0
    assert (command.kind, command.node, command.index) == ("command", "rtr-us", 3)
    assert absent.spec == RouteSpec(node="rtr-us", prefix=VIP, absent=True)
    assert absent.deadline == 0.0


def test_defaults_apply_when_a_file_says_nothing() -> None:
    found = one("checks: [{name: a, route: {node: r, prefix: 10.0.0.0/8}}]")
    assert (found.deadline, found.interval) == (30.0, 0.5)
    assert isinstance(found.spec, HttpSpec | RouteSpec)
    http = one("checks: [{name: a, http: {node: c, url: 'https://vip/'}}]").spec
    assert isinstance(http, HttpSpec)
    assert (http.status, http.headers, http.body, http.insecure, http.host) == (200, {}, None, False, None)


def test_every_violation_is_reported_with_its_path() -> None:
    text = """
defaults: {deadline: soon, retries: 3}
extra: 1
checks:
  - name: a
    route: {node: r, prefix: 10.0.0.1/24, via: 10.0.0.2, absent: yes}
  - name: a
    http: {node: c, url: "ftp://x/", status: 700, headers: {x-a: [1]}, body: "(", stauts: 200}
  - name: b
    metric: {node: e, url: "http://127.0.0.1/metrics", name: 9bad, op: "=", value: "one", labels: {vip: 1.5}}
  - name: c
    command: {node: "bad node", argv: [], exit: 256}
  - name: d
  - name: e
    route: {node: r, prefix: 10.0.0.0/8}
    http: {node: c, url: "http://x/"}
  - route: {node: r, prefix: 10.0.0.0/8}
    interval: 0s
  - just a string
"""
    assert violations(text) == [
        "extra: unknown key (known: checks, defaults)",
        "defaults.retries: unknown key (known: deadline, interval)",
        "defaults.deadline: 'soon' is not a duration (a number and a unit: 500ms, 30s, 2m)",
        "checks[0].route.prefix: '10.0.0.1/24' is not a prefix: 10.0.0.1/24 has host bits set (did you mean 10.0.0.0/24?)",
        "checks[0].route.via: must be a non-empty list of next-hop addresses, e.g. [10.1.1.2]",
        "checks[1].http.stauts: unknown key (known: node, url, host, status, headers, body, insecure)",
        "checks[1].http.url: 'ftp://x/' is not an http:// or https:// URL with a host",
        "checks[1].http.status: must be an HTTP status (100-599)",
        "checks[1].http.headers: x-a: must be a string (quote it in YAML)",
        "checks[1].http.body: '(' is not a regular expression: missing ), unterminated subpattern at position 0",
        "checks[1].name: 'a' is also the name of checks[0]",
        "checks[2].metric.name: '9bad' is not a metric name",
        "checks[2].metric.labels: vip: must be a string (quote it in YAML)",
        "checks[2].metric.op: must be one of == != >= <= > < (quote it in YAML)",
        "checks[2].metric.value: must be a number",
        "checks[3].command.node: 'bad node' is not a node name (letters, digits, _ . -)",
        "checks[3].command.argv: must be a non-empty list of strings (the program and its arguments)",
        "checks[3].command.exit: must be an exit status (0-255)",
        "checks[4]: has none; a check has exactly one of route, http, metric, command",
        "checks[5]: has route and http; a check has exactly one of route, http, metric, command",
        "checks[6].name: is required",
        "checks[6].interval: must be more than 0",
        "checks[7]: must be a mapping with name, deadline, interval, route, http, metric, command",
    ]


def test_absent_and_via_exclude_each_other_and_names_are_unique() -> None:
    assert violations(
        """
checks:
  - {name: a, route: {node: r, prefix: 10.0.0.0/8, via: [10.0.0.1, 10.0.0.1]}}
  - {name: b, route: {node: r, prefix: 10.0.0.0/8, via: [10.0.0.1], absent: true}}
  - {name: a, command: {node: r, argv: [/bin/true]}}
  - {name: a, command: {node: r, argv: [/bin/true, 1.5]}}
"""
    ) == [
        "checks[0].route.via: lists an address twice",
        "checks[1].route.via: absent: true takes no via (a route that is not there has no next hop)",
        "checks[2].name: 'a' is also the name of checks[0]",
        "checks[3].command.argv: [1] must be a string (quote it in YAML)",
        "checks[3].name: 'a' is also the name of checks[0]",
    ]


def test_the_file_as_a_whole() -> None:
    assert violations("") == ["checks file: must be a mapping with checks, defaults"]
    assert violations("checks: []") == ["checks: is empty: list at least one check"]
    assert violations("checks: {a: 1}") == ["checks: must be a list of checks"]
    assert violations("defaults: {}") == ["checks: is required", "checks: must be a list of checks"]
    assert violations("checks: [\n  {name: a\n") == [
        "line 3, column 1: expected ',' or '}', but got '<stream end>'"
    ]
    assert violations("checks:\n  - name: a\n    name: b\n    command: {node: r, argv: [/bin/true]}\n") == [
        "line 3, column 5: key 'name' given twice"
    ]


def test_argv_numbers_and_header_numbers_become_strings() -> None:
    found = one("checks: [{name: a, command: {node: r, argv: [ping, -c, 1, 10.0.0.1], exit: 1}}]")
    assert isinstance(found.spec, CommandSpec)
    assert found.spec.argv == ("ping", "-c", "1", "10.0.0.1")
    labels = one(
        "checks: [{name: a, metric: {node: e, url: 'http://h/', name: m, labels: {code: 200}, op: '>=', value: 0.5}}]"
    )
    assert isinstance(labels.spec, MetricSpec)
    assert labels.spec.labels == {"code": "200"}


def test_the_shipped_labs_checks_parse() -> None:
    files = sorted((REPO / "labs").glob("*/checks.yml"))
    for path in files:
        assert load_checks(path.read_text()), path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("1.5s", 1.5), ("2m", 120.0), ("0s", 0.0), (" 10s ", 10.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "1h", "-1s", "s", "1 s", "1e3ms", ""])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_durations_are_printed_as_they_are_written() -> None:
    assert [format_duration(s) for s in (0.25, 0.01, 1, 1.5, 30, 60, 90, 120, 75)] == [
        "250ms", "10ms", "1s", "1.5s", "30s", "1m", "1.5m", "2m", "75s",
    ]  # fmt: skip
    for seconds in (0.25, 1.5, 90, 75):
        assert parse_duration(format_duration(seconds)) == seconds


# -- the command of an attempt --------------------------------------------------------------------


def spec_of(text: str) -> Any:
    return one(f"checks: [{{name: a, {text}}}]").spec


def test_commands() -> None:
    assert command_for(spec_of(f"route: {{node: r, prefix: {VIP}}}"), 5) == [
        "ip", "-j", "-4", "route", "show", "exact", VIP,
    ]  # fmt: skip
    assert command_for(spec_of("route: {node: r, prefix: '2001:db8::/32'}"), 5)[2] == "-6"
    assert command_for(spec_of("command: {node: r, argv: [birdc, show]}"), 5) == ["birdc", "show"]
    curl = ["curl", "-q", "-sS", "--noproxy", "*", "--max-time", "2.5"]
    assert command_for(spec_of("metric: {node: e, url: 'http://127.0.0.1:9901/metrics', name: m, op: '==', value: 1}"), 2.5) == [
        *curl, "--fail", "http://127.0.0.1:9901/metrics",
    ]  # fmt: skip
    assert command_for(spec_of("http: {node: c, url: 'http://203.0.113.10/'}"), 2.5) == [
        *curl, "-D", "-", "-o", "-", "http://203.0.113.10/",
    ]  # fmt: skip
    with_host = spec_of(
        "http: {node: c, url: 'https://203.0.113.10:8443/x?y=1', host: www.example.test, insecure: true}"
    )
    assert command_for(with_host, 2.5) == [
        *curl, "-D", "-", "-o", "-", "-k", "--connect-to", "www.example.test:8443:203.0.113.10:8443",
        "https://www.example.test:8443/x?y=1",
    ]  # fmt: skip
    v6 = spec_of("http: {node: c, url: 'http://[2001:db8::10]/', host: www.example.test}")
    assert command_for(v6, 1)[-3:] == [
        "--connect-to", "www.example.test:80:[2001:db8::10]:80", "http://www.example.test/",
    ]  # fmt: skip


# -- judging routes -------------------------------------------------------------------------------

ROUTE = RouteSpec(node="r", prefix=VIP, via=("10.1.1.2",))
BIRD = [
    {
        "dst": "203.0.113.10",
        "gateway": "10.1.1.2",
        "dev": "eth1",
        "protocol": "bird",
        "metric": 32,
        "flags": [],
    }
]
FRR_ECMP = [
    {
        "dst": "203.0.113.10", "protocol": "bgp", "metric": 20, "flags": [],
        "nexthops": [
            {"gateway": "10.2.0.1", "dev": "eth2", "weight": 1, "flags": []},
            {"gateway": "10.1.1.2", "dev": "eth1", "weight": 1, "flags": []},
        ],
    }
]  # fmt: skip


def test_route_verdicts() -> None:
    assert route_verdict(ROUTE, BIRD) == Verdict(True, f"route {VIP} via 10.1.1.2", "via 10.1.1.2")
    other = [{**BIRD[0], "gateway": "10.2.0.1"}]
    assert route_verdict(ROUTE, other).message == f"route {VIP} via 10.2.0.1, expected via 10.1.1.2"
    assert route_verdict(ROUTE, FRR_ECMP).message == (
        f"route {VIP} via 10.2.0.1, 10.1.1.2, expected via 10.1.1.2"
    )
    assert route_verdict(RouteSpec("r", VIP, via=("10.1.1.2", "10.2.0.1")), FRR_ECMP).passed
    assert route_verdict(ROUTE, []).message == f"no route {VIP}, expected via 10.1.1.2"
    assert route_verdict(RouteSpec("r", VIP), FRR_ECMP).passed
    assert not route_verdict(RouteSpec("r", VIP), []).passed
    assert route_verdict(RouteSpec("r", VIP, absent=True), []).passed
    assert route_verdict(RouteSpec("r", VIP, absent=True), BIRD).message == (
        f"route {VIP} via 10.1.1.2, expected no route"
    )


def test_the_route_in_use_is_the_unicast_one_with_the_lowest_metric() -> None:
    both = [{**BIRD[0], "gateway": "10.2.0.1", "metric": 100}, BIRD[0]]
    assert route_verdict(ROUTE, both).passed
    unreachable = [{"type": "unreachable", "dst": "203.0.113.10", "metric": 1, "flags": []}]
    assert route_verdict(ROUTE, unreachable + BIRD).passed
    assert route_verdict(ROUTE, unreachable).observed == f"no route {VIP} (only unreachable)"
    assert route_verdict(RouteSpec("r", VIP, absent=True), unreachable).passed
    connected = [{"dst": "203.0.113.10", "dev": "eth0", "scope": "link", "flags": []}]
    assert route_verdict(ROUTE, connected).observed == f"route {VIP} dev eth0 (no gateway)"
    v6_next_hop = [{"dst": "203.0.113.10", "via": {"family": "inet6", "host": "fe80::1"}, "dev": "eth1"}]
    assert route_verdict(RouteSpec("r", VIP, via=("fe80::1",)), v6_next_hop).passed


def test_route_command_output() -> None:
    assert verdict(ROUTE, 0, json.dumps(BIRD), "").passed
    assert verdict(ROUTE, 0, "", "").observed == f"no route {VIP}"
    assert verdict(ROUTE, 1, "", 'Error: any valid prefix is expected rather than "x".\n').observed == (
        'ip route failed: Error: any valid prefix is expected rather than "x".'
    )
    assert verdict(ROUTE, 0, "not json", "").observed == "ip route printed no JSON: not json"


# -- judging HTTP ---------------------------------------------------------------------------------

HTTP = HttpSpec(node="c", url="http://203.0.113.10/", headers={"x-meshgate-zone": "eu-west"})
RESPONSE = "HTTP/1.1 200 OK\r\nX-Meshgate-Zone: eu-west\r\nContent-Length: 12\r\n\r\nserved by eu"


def test_http_responses_as_curl_prints_them() -> None:
    assert parse_http_response(RESPONSE) == (
        200,
        {"x-meshgate-zone": ["eu-west"], "content-length": ["12"]},
        "served by eu",
    )
    assert parse_http_response(RESPONSE.replace("\r\n", "\n")) == parse_http_response(RESPONSE)
    interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + RESPONSE
    assert parse_http_response(interim) == parse_http_response(RESPONSE)
    assert parse_http_response("HTTP/2 404\r\nset-cookie: a\r\nset-cookie: b\r\n\r\n") == (
        404, {"set-cookie": ["a", "b"]}, "",
    )  # fmt: skip
    assert parse_http_response("garbage") is None
    assert parse_http_response("") is None


def test_http_verdicts() -> None:
    assert http_verdict(HTTP, 0, RESPONSE, "") == Verdict(
        True, "status 200, x-meshgate-zone: eu-west", "status 200, x-meshgate-zone: eu-west"
    )
    us = RESPONSE.replace("eu-west", "us-east")
    assert http_verdict(HTTP, 0, us, "").message == (
        "status 200, x-meshgate-zone: us-east, expected status 200, x-meshgate-zone: eu-west"
    )
    bare = "HTTP/1.1 503 Service Unavailable\r\n\r\n"
    assert http_verdict(HTTP, 0, bare, "").observed == "status 503"
    assert http_verdict(HTTP, 0, bare.replace("503 Service Unavailable", "200 OK"), "").observed == (
        "status 200, no x-meshgate-zone header"
    )
    import re

    body = HttpSpec(node="c", url="http://v/", body=re.compile(r"served by (us|ap)"))
    assert http_verdict(body, 0, RESPONSE, "").message == (
        "status 200, body 'served by eu', expected status 200, body matching /served by (us|ap)/"
    )
    refused = "curl: (7) Failed to connect to 203.0.113.10 port 80 after 0 ms: Couldn't connect to server\n"
    assert http_verdict(HTTP, 7, "", refused).observed == (
        "request failed: curl: (7) Failed to connect to 203.0.113.10 port 80 after 0 ms: Couldn't connect to server"
    )
    assert http_verdict(HTTP, 0, "<html>", "").observed == "no HTTP response in curl's output: <html>"


# -- judging metrics ------------------------------------------------------------------------------

METRICS = r"""# HELP meshgate_edge_vip_announced Whether the VIP is announced.
# TYPE meshgate_edge_vip_announced gauge
meshgate_edge_vip_announced{vip="203.0.113.10"} 1
meshgate_edge_vip_announced{vip="203.0.113.11"} 0
meshgate_requests_total{zone="eu-west",code="200"} 1027 1700000000000
meshgate_requests_total{zone="eu-west",code="503"} 3
odd{path="C:\\dir",say="\"hi\"\n"} +Inf
up 1
nan_metric NaN
broken{x="1" 2
# EOF
"""


def test_prometheus_text() -> None:
    samples = {sample.series(): sample.value for sample in parse_metrics(METRICS)}
    assert samples.pop("nan_metric") != samples.get("nan_metric")  # NaN
    assert samples == {
        'meshgate_edge_vip_announced{vip="203.0.113.10"}': 1.0,
        'meshgate_edge_vip_announced{vip="203.0.113.11"}': 0.0,
        'meshgate_requests_total{zone="eu-west",code="200"}': 1027.0,
        'meshgate_requests_total{zone="eu-west",code="503"}': 3.0,
        'odd{path="C:\\dir",say=""hi"\n"}': float("inf"),
        "up": 1.0,
    }
    (odd,) = [s for s in parse_metrics(METRICS) if s.name == "odd"]
    assert odd.labels == {"path": "C:\\dir", "say": '"hi"\n'}


def metric(op: str, value: float, **labels: str) -> MetricSpec:
    return MetricSpec(
        node="e", url="http://h/", name="meshgate_edge_vip_announced", op=op, value=value, labels=labels
    )


@pytest.mark.parametrize(
    ("op", "value", "passed"),
    [("==", 1, True), ("!=", 1, False), (">=", 1, True), ("<=", 0.5, False), (">", 0, True), ("<", 1, False)],
)
def test_metric_operators(op: str, value: float, passed: bool) -> None:
    assert metric_verdict(metric(op, value, vip="203.0.113.10"), parse_metrics(METRICS)).passed is passed


def test_metric_verdicts() -> None:
    samples = parse_metrics(METRICS)
    assert metric_verdict(metric("==", 1, vip="203.0.113.11"), samples).message == (
        'meshgate_edge_vip_announced{vip="203.0.113.11"} = 0, expected == 1'
    )
    assert metric_verdict(metric("==", 1, vip="192.0.2.1"), samples).message == (
        'no series meshgate_edge_vip_announced{vip="192.0.2.1"} (there are '
        'meshgate_edge_vip_announced{vip="203.0.113.10"} 1; meshgate_edge_vip_announced{vip="203.0.113.11"} 0)'
        ", expected == 1"
    )
    assert metric_verdict(metric("==", 1), samples).observed == (
        "2 series match meshgate_edge_vip_announced ("
        'meshgate_edge_vip_announced{vip="203.0.113.10"} 1; meshgate_edge_vip_announced{vip="203.0.113.11"} 0)'
        "; add labels to pick one"
    )
    missing = MetricSpec(node="e", url="http://h/", name="absent_metric", op="==", value=0)
    assert metric_verdict(missing, samples).observed == "no series absent_metric"
    scrape = verdict(metric("==", 1), 22, "", "curl: (22) The requested URL returned error: 404\n")
    assert scrape.observed == "scrape failed: curl: (22) The requested URL returned error: 404"


def test_command_verdicts() -> None:
    import re

    spec = CommandSpec(node="r", argv=("birdc", "show", "protocols"), stdout=re.compile("Established"))
    assert verdict(spec, 0, "bgp1 BGP --- up 12:00 Established\n", "") == Verdict(
        True, "exit 0", "exit 0, stdout matching /Established/"
    )
    assert verdict(spec, 0, "bgp1 BGP --- start 12:00 Active\n", "").message == (
        "exit 0, stdout 'bgp1 BGP --- start 12:00 Active', expected exit 0, stdout matching /Established/"
    )
    assert verdict(spec, 1, "", "Unable to connect to server control socket\n").message == (
        "exit 1 (Unable to connect to server control socket), expected exit 0, stdout matching /Established/"
    )
    long = verdict(CommandSpec(node="r", argv=("x",), exit=3), 0, "y" * 500, "")
    assert long.observed == "exit 0 (" + "y" * 119 + "…)"


# -- running on a fake lab ------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeNode:
    netns: str
    labels: Mapping[str, str] = field(default_factory=dict)


class FakeLab:
    """Answers each ``exec`` with the next of ``answers`` (the last one repeats); each call costs
    ``cost`` seconds of the fake clock."""

    def __init__(
        self, answers: list[Callable[[], subprocess.CompletedProcess[str]]], clock: FakeClock
    ) -> None:
        self.nodes = {"r": FakeNode("ns-r"), "c": FakeNode("ns-c")}
        self.answers = answers
        self.clock = clock
        self.calls: list[tuple[str, list[str], float]] = []

    def netns(self, node: str) -> str:
        return self.nodes[node].netns

    def exec(
        self, node: str, argv: list[str], *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append((node, argv, timeout))
        self.clock.now += 0.05
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return answer()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def routes(*gateways: str) -> Callable[[], subprocess.CompletedProcess[str]]:
    found = [{"dst": "203.0.113.10", "gateway": g, "dev": "eth1", "flags": []} for g in gateways]
    return lambda: subprocess.CompletedProcess([], 0, json.dumps(found), "")


def route_check(deadline: str = "2s", interval: str = "500ms", name: str = "eu") -> Check:
    return one(
        f"checks: [{{name: {name}, deadline: {deadline}, interval: {interval}, "
        f"route: {{node: r, prefix: {VIP}, via: [10.1.1.2]}}}}]"
    )


def test_a_check_is_retried_until_it_passes() -> None:
    clock = FakeClock()
    lab = FakeLab([routes(), routes("10.2.0.1"), routes("10.1.1.2")], clock)
    result = run_check(lab, route_check(), clock=clock, sleep=clock.sleep)
    assert result.passed
    assert result.attempts == 3
    assert result.seconds == pytest.approx(3 * 0.05 + 2 * 0.5)
    assert clock.slept == [0.5, 0.5]
    assert result.verdict.message == f"route {VIP} via 10.1.1.2"
    assert [call[0] for call in lab.calls] == ["r", "r", "r"]
    assert lab.calls[0][2] == ATTEMPT_TIMEOUT - 3.0 + 2.0  # the deadline is nearer than 5 s; + slack


def test_a_check_fails_at_its_deadline_with_the_last_observation() -> None:
    clock = FakeClock()
    lab = FakeLab([routes(), routes("10.2.0.1")], clock)
    result = run_check(lab, route_check("2s", "500ms"), clock=clock, sleep=clock.sleep)
    assert not result.passed
    assert result.attempts == 5  # 0, 0.55, 1.1, 1.65, then once more at the deadline
    assert clock.slept == [0.5, 0.5, 0.5, 0.3]
    assert result.seconds == pytest.approx(2.05)
    assert result.verdict.message == f"route {VIP} via 10.2.0.1, expected via 10.1.1.2"
    with pytest.raises(CheckFailed, match=r"check 'eu' failed after 2\.05s \(5 attempts\): route "):
        wait_for_check(lab, route_check("2s", "500ms"), clock=clock, sleep=clock.sleep)


def test_a_zero_deadline_is_one_attempt() -> None:
    clock = FakeClock()
    lab = FakeLab([routes()], clock)
    result = run_check(lab, route_check("0s"), clock=clock, sleep=clock.sleep)
    assert (result.passed, result.attempts, clock.slept) == (False, 1, [])
    assert lab.calls[0][2] == 1.0 + 2.0  # the floor of an attempt's timeout, + slack
    lab = FakeLab([routes("10.1.1.2")], clock)
    assert wait_for_check(lab, route_check("0s"), clock=clock, sleep=clock.sleep) == pytest.approx(0.05)


def test_an_attempt_that_times_out_or_cannot_run_is_a_failed_attempt() -> None:
    def hangs() -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(["curl"], 7)

    def missing() -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", "ip")

    clock = FakeClock()
    result = run_check(FakeLab([hangs], clock), route_check("0s"), clock=clock, sleep=clock.sleep)
    assert result.verdict.message == "no answer within 1s, expected via 10.1.1.2"
    result = run_check(FakeLab([missing], clock), route_check("0s"), clock=clock, sleep=clock.sleep)
    assert result.verdict.message == (
        "could not run in r: [Errno 2] No such file or directory: 'ip', expected via 10.1.1.2"
    )


def test_checks_run_in_order_and_name_only_nodes_of_the_lab() -> None:
    clock = FakeClock()
    lab = FakeLab([routes("10.1.1.2")], clock)
    checks = [route_check(name="one"), route_check(name="two")]
    seen: list[str] = []
    results = run_checks(
        lab, checks, on_result=lambda r: seen.append(r.check.name), clock=clock, sleep=clock.sleep
    )
    assert seen == ["one", "two"]
    assert all(result.passed for result in results)
    stranger = one("checks: [{name: x, command: {node: rtr-x, argv: [/bin/true]}}]")
    with pytest.raises(ChecksError) as caught:
        run_checks(lab, [stranger], clock=clock, sleep=clock.sleep)
    assert caught.value.violations == ["checks[0].command.node: no node 'rtr-x' in this lab (nodes: c, r)"]
    assert len(lab.calls) == 2


def test_only_selects_checks_by_name() -> None:
    checks = load_checks(EXAMPLE)
    assert [c.index for c in select(checks, ["the us router has its sessions", checks[0].name])] == [0, 3]
    assert select(checks) == checks
    with pytest.raises(ChecksError) as caught:
        select(checks, ["nope"])
    assert caught.value.violations[0].startswith("--only: no check named 'nope' (checks: 'eu router prefers")


# -- output ---------------------------------------------------------------------------------------


def results() -> list[CheckResult]:
    passed = route_check(name="eu route")
    failed = one("checks: [{name: served, http: {node: c, url: 'http://v/'}}]")
    return [
        CheckResult(passed, True, 1.234, 3, Verdict(True, f"route {VIP} via 10.1.1.2", "via 10.1.1.2")),
        CheckResult(failed, False, 30.01, 60, Verdict(False, "status 503", "status 200")),
    ]


def test_the_table() -> None:
    assert render_table(results()).splitlines() == [
        "CHECK     KIND   NODE  RESULT  TIME                  ATTEMPTS  DETAIL",
        "eu route  route  r     pass    1.23s                 3         route 203.0.113.10/32 via 10.1.1.2",
        "served    http   c     FAIL    gave up after 30.01s  60        status 503, expected status 200",
        "1 of 2 checks passed",
    ]


def test_the_json() -> None:
    assert json.loads(render_json(results())) == {
        "passed": False,
        "summary": "1 of 2 checks passed",
        "checks": [
            {"name": "eu route", "kind": "route", "node": "r", "passed": True, "seconds": 1.234, "attempts": 3,
             "observed": f"route {VIP} via 10.1.1.2", "expected": "via 10.1.1.2",
             "detail": f"route {VIP} via 10.1.1.2"},
            {"name": "served", "kind": "http", "node": "c", "passed": False, "seconds": 30.01, "attempts": 60,
             "observed": "status 503", "expected": "status 200", "detail": "status 503, expected status 200"},
        ],
    }  # fmt: skip


def test_check_lab_exit_statuses() -> None:
    clock = FakeClock()
    out: list[str] = []
    lab = FakeLab([routes("10.1.1.2")], clock)
    assert check_lab(lab, [route_check("0s")], "json", echo=out.append) == 0
    lab = FakeLab([routes()], clock)
    progress: list[str] = []
    assert check_lab(lab, [route_check("0s")], "table", echo=out.append, progress=progress.append) == 1
    assert progress[0].startswith("FAIL  eu (gave up after ")
    stranger = one("checks: [{name: x, command: {node: rtr-x, argv: [/bin/true]}}]")
    assert check_lab(lab, [stranger], "table", echo=out.append) == 3


def test_the_command_refuses_an_invalid_file_before_looking_for_the_lab(tmp_path: Path) -> None:
    (tmp_path / "checks.yml").write_text("checks: [{name: a, route: {node: r, prefix: nope}}]\n")
    result = CliRunner().invoke(check, [str(tmp_path)])
    assert result.exit_code == 3
    assert result.output == (
        f"{tmp_path}/checks.yml: checks[0].route.prefix: 'nope' is not a prefix: "
        "'nope' does not appear to be an IPv4 or IPv6 network\n"
    )
    missing = CliRunner().invoke(check, [str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    (tmp_path / "checks.yml").unlink()
    absent = CliRunner().invoke(check, [str(tmp_path)])
    assert absent.exit_code == 3
    assert "checks.yml: No such file or directory" in absent.output
    with pytest.raises(ChecksError):
        read_checks(tmp_path / "checks.yml")


def test_parse_checks_takes_decoded_documents_too() -> None:
    (found,) = parse_checks({"checks": [{"name": "a", "route": {"node": "r", "prefix": VIP}}]})
    assert found.spec == RouteSpec(node="r", prefix=VIP)

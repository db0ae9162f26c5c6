"""What the ``http`` benchmark builds before it measures, and how it reads what it ran: the
workload's configuration (nginx), the three proxies' (a ``bench.http_node`` spec, an HAProxy
configuration file, an nginx one), wrk's output, and the three proxies' logs.

The proxies do the same hop, plain HTTP/1.1 with keep-alive on both sides::

    wrk -> proxy (meshgate, HAProxy or nginx) -> nginx (return 200, a ~100-byte body)
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.l4_setup import HAPROXY, LOCALHOST

NGINX: Final = "/usr/sbin/nginx"
WRK: Final = "/usr/bin/wrk"
ZONE: Final = "bench"
#: what nginx answers to every request: 100 bytes, newline included
BODY: Final = (
    "meshgate http benchmark: a small fixed body served by nginx, one hundred bytes with the newline...."
)
assert len(BODY) + 1 == 100, len(BODY)


@dataclass(frozen=True)
class Ports:
    nginx: int
    meshgate: int
    haproxy: int
    nginx_proxy: int


# --- the workload: nginx ---------------------------------------------------------------------------


def nginx_config(directory: Path, port: int) -> Path:
    """nginx as one foreground process (no master, one worker loop), every path in ``directory``,
    no access log, keep-alive without a request limit (1.22's default closes a connection after
    1,000 requests, which would make the proxies reconnect all the time)."""
    d = directory
    text = f"""\
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {d}/nginx-client-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 10000000;

    server {{
        listen {LOCALHOST}:{port} backlog=4096;
        location / {{
            return 200 "{BODY}\\n";
        }}
    }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def nginx_argv(config: Path, directory: Path) -> list[str]:
    # -e: the error log before the configuration is read (else /var/log/nginx/error.log)
    return [NGINX, "-e", str(directory / "nginx-error.log"), "-c", str(config)]


# --- the hop: meshgate ---------------------------------------------------------------------------


def meshgate_spec(directory: Path, ports: Ports) -> Path:
    """The ``bench.http_node`` spec: listen on ``ports.meshgate``, forward to nginx, log every
    request to ``meshgate-access.log``."""
    spec = {
        "address": LOCALHOST,
        "port": ports.meshgate,
        "upstream": {"address": LOCALHOST, "port": ports.nginx},
        "zone": ZONE,
        "access_log": str(directory / "meshgate-access.log"),
        "ready_file": str(directory / "meshgate.ready"),
        "stats_file": str(directory / "meshgate.stats.json"),
    }
    path = directory / "meshgate.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def meshgate_argv(spec: Path) -> list[str]:
    return [sys.executable, "-m", "bench.http_node", str(spec)]


# --- the hop: HAProxy ----------------------------------------------------------------------------


def haproxy_config(directory: Path, ports: Ports) -> Path:
    """HTTP mode, one thread, what meshgate's hop does to a request: keep-alive both sides
    (server connections reused under ``http-reuse safe``, the default), ``X-Forwarded-For``,
    ``X-Forwarded-Proto``, ``Forwarded`` and a request id added, a client's
    ``X-Meshgate-Client-Identity`` dropped; one log line per request (``option httplog``) to
    stdout, which is a file. Timeouts as meshgate's ``HttpOptions`` defaults: connect 5 s,
    request head 10 s, keep-alive idle 60 s, server 15 s (HAProxy's is an inactivity timeout, as
    meshgate's wait for the response head), client 60 s (meshgate: a stalled response). A stats
    socket gives the server's connection and reuse counts at the end."""
    text = f"""\
global
    nbthread 1
    maxconn 4000
    log stdout format raw local0 info
    stats socket {directory}/haproxy.sock mode 600 level user

defaults
    mode http
    log global
    option httplog
    http-reuse safe
    timeout connect 5s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout client 60s
    timeout server 15s

frontend inbound
    bind {LOCALHOST}:{ports.haproxy}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request add-header Forwarded "for=%[src];proto=http"
    http-request del-header X-Meshgate-Client-Identity
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-ID
    default_backend web

backend web
    server nginx {LOCALHOST}:{ports.nginx}
"""
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return path


def haproxy_argv(config: Path) -> list[str]:
    return [HAPROXY, "-db", "-f", str(config)]  # -db: foreground, one process (no master)


def haproxy_server_stats(directory: Path) -> dict[str, int] | None:
    """The nginx server's counters from HAProxy's stats socket (``show stat``): requests,
    connections opened and reused, errors. None when the socket does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(directory / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "web" and row.get("svname") == "nginx":
            wanted = ("stot", "connect", "reuse", "econ", "eresp", "wretr", "wredis", "hrsp_2xx", "hrsp_5xx")
            return {key: int(row[key]) for key in wanted if row.get(key, "").isdigit()}
    return None


# --- the hop: nginx as a reverse proxy ------------------------------------------------------------

#: the nginx proxy's access log: one JSON object per request, fields named as meshgate's where
#: nginx has them (``escape=json`` escapes the variables; numbers are left bare)
NGINX_LOG_FORMAT: Final = (
    '{"ts":$msec,"id":"$request_id","client":"$remote_addr","method":"$request_method",'
    '"path":"$request_uri","status":$status,"duration_s":$request_time,"bytes_in":$request_length,'
    '"bytes_out":$bytes_sent,"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
    '"upstream_s":"$upstream_response_time"}'
)
#: the access log's buffer: written when 64 KiB are pending or 250 ms after the first pending
#: line, as meshgate's is on its 0.25 s tick (the bench counts the log 0.6 s after wrk exits)
NGINX_LOG_BUFFER: Final = "buffer=64k flush=250ms"


def nginx_proxy_config(directory: Path, ports: Ports, connections: int) -> Path:
    """nginx 1.22 as a reverse proxy doing meshgate's hop: one foreground process (no master, one
    worker loop), every path in ``directory`` (``nginx-proxy*``, apart from the workload's);
    ``proxy_pass`` over HTTP/1.1 to an ``upstream`` block with a keep-alive pool of
    ``connections`` (as many as wrk keeps busy) and no request limit on either side;
    ``X-Forwarded-For``, ``X-Forwarded-Proto``, ``Forwarded`` (added to a client's, as HAProxy's
    ``add-header``) and ``X-Request-ID`` (``$request_id``) set, ``X-Meshgate-Client-Identity``
    dropped, the client's ``Host`` passed on; one JSON access log line per request to
    ``nginx-proxy-access.log``, buffered. Timeouts as meshgate's ``HttpOptions`` defaults and
    HAProxy's configuration: connect 5 s, request head 10 s, keep-alive idle 60 s, upstream read
    15 s, send 60 s."""
    d = directory
    text = f"""\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {2 * connections + 1000};
pid {d}/nginx-proxy.pid;
error_log {d}/nginx-proxy-error.log warn;

events {{
    worker_connections {2 * connections + 500};
}}

http {{
    client_body_temp_path {d}/nginx-proxy-client-body;
    proxy_temp_path {d}/nginx-proxy-proxy;
    fastcgi_temp_path {d}/nginx-proxy-fastcgi;
    uwsgi_temp_path {d}/nginx-proxy-uwsgi;
    scgi_temp_path {d}/nginx-proxy-scgi;
    log_format bench escape=json '{NGINX_LOG_FORMAT}';
    access_log {d}/nginx-proxy-access.log bench {NGINX_LOG_BUFFER};
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    client_header_timeout 10s;
    send_timeout 60s;
    proxy_connect_timeout 5s;
    proxy_read_timeout 15s;

    map $http_forwarded $bench_forwarded {{
        "" "for=$remote_addr;proto=http";
        default "$http_forwarded, for=$remote_addr;proto=http";
    }}

    upstream web {{
        server {LOCALHOST}:{ports.nginx};
        keepalive {connections};
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }}

    server {{
        listen {LOCALHOST}:{ports.nginx_proxy} backlog=4096;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header Forwarded $bench_forwarded;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Meshgate-Client-Identity "";
        }}
    }}
}}
"""
    path = directory / "nginx-proxy.conf"
    path.write_text(text)
    return path


def nginx_proxy_argv(config: Path, directory: Path) -> list[str]:
    # -e: the error log before the configuration is read (else /var/log/nginx/error.log)
    return [NGINX, "-e", str(directory / "nginx-proxy-error.log"), "-c", str(config)]


def nginx_proxy_errors(directory: Path) -> list[str]:
    """What the nginx proxy logged at ``warn`` or above (its error log), the newest last."""
    return [line.rstrip("\n") for line in _lines(directory / "nginx-proxy-error.log") if line.strip()]


# --- versions ------------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""


def versions() -> dict[str, str]:
    return {
        "nginx": _first_line([NGINX, "-v"]).removeprefix("nginx version: "),
        "haproxy": _first_line([HAPROXY, "-v"]).split(" - ")[0],
        "wrk": _first_line([WRK, "-v"]).split(" Copyright")[0],
    }


def missing_binaries() -> list[str]:
    return [path for path in (NGINX, HAPROXY, WRK) if not Path(path).exists()]


# --- wrk's output --------------------------------------------------------------------------------

_TIME_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME: Final = r"([0-9.]+)(us|ms|s|m|h)"
_SIZE_UNITS: Final = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def seconds_of(value: str, unit: str) -> float:
    """wrk's times (``format_time``): us, ms, s, m or h."""
    return float(value) * _TIME_UNITS[unit]


#: wrk's ``done`` callback: figures wrk's own report rounds or leaves out (p99.9), one per line
WRK_SCRIPT: Final = """\
-- meshgate bench: print exact figures at the end (wrk's report has no p99.9)
done = function(summary, latency, requests)
  local out = function(key, value) io.write(string.format("meshgate-bench %s %s\\n", key, value)) end
  out("requests", summary.requests)
  out("duration_us", summary.duration)
  out("bytes", summary.bytes)
  for _, kind in ipairs({"connect", "read", "write", "status", "timeout"}) do
    out("errors_" .. kind, summary.errors[kind])
  end
  for _, q in ipairs({50, 90, 99, 99.9}) do
    out(string.format("p%g_us", q), latency:percentile(q))
  end
  out("max_us", latency.max)
  out("mean_us", string.format("%.1f", latency.mean))
end
"""


def wrk_script(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(WRK_SCRIPT)
    return path


def parse_wrk_script(text: str) -> dict[str, Any]:
    """The ``meshgate-bench KEY VALUE`` lines of ``WRK_SCRIPT``: requests, duration, requests/s,
    latency percentiles (seconds, from wrk's histogram at 1 us resolution), errors. Raises
    ``ValueError`` when a figure is missing."""
    values: dict[str, float] = {}
    for match in re.finditer(r"^meshgate-bench (\S+) (\S+)$", text, re.M):
        values[match.group(1)] = float(match.group(2))
    wanted = ("requests", "duration_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us")
    missing = [key for key in wanted if key not in values]
    if missing:
        raise ValueError(f"wrk's script printed no {', '.join(missing)}")
    requests = int(values["requests"])
    duration = values["duration_us"] / 1e6
    errors = {k: int(values.get(f"errors_{k}", 0)) for k in ("connect", "read", "write", "timeout")}
    return {
        "requests": requests,
        "duration_s": duration,
        "rps": requests / duration if duration else float("nan"),
        "bytes_read": int(values.get("bytes", 0)),
        "p50_s": values["p50_us"] / 1e6,
        "p90_s": values["p90_us"] / 1e6,
        "p99_s": values["p99_us"] / 1e6,
        "p999_s": values["p99.9_us"] / 1e6,
        "latency_max_s": values["max_us"] / 1e6,
        "latency_mean_s": values.get("mean_us", float("nan")) / 1e6,
        "socket_errors": errors,
        "socket_errors_total": sum(errors.values()),
        "non_2xx_3xx": int(values.get("errors_status", 0)),
    }


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures of one ``wrk --latency`` run: requests, duration, requests/s, the latency
    percentiles (seconds; p99.9 too when wrk ran ``WRK_SCRIPT``), errors. Raises ``ValueError`` when a figure that every run prints is
    missing."""
    out: dict[str, Any] = {}
    done = re.search(r"^\s*(\d+) requests in " + _TIME + r", ([0-9.]+)([KMGT]?B) read", text, re.M)
    if done is None:
        raise ValueError("no 'N requests in T' line in wrk's output")
    out["requests"] = int(done.group(1))
    out["duration_s"] = seconds_of(done.group(2), done.group(3))
    out["bytes_read"] = round(float(done.group(4)) * _SIZE_UNITS[done.group(5)])
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if rate is None:
        raise ValueError("no 'Requests/sec' line in wrk's output")
    out["rps"] = float(rate.group(1))
    latency = re.search(r"^\s*Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME, text, re.M)
    if latency is not None:
        out["latency_avg_s"] = seconds_of(latency.group(1), latency.group(2))
        out["latency_stdev_s"] = seconds_of(latency.group(3), latency.group(4))
        out["latency_max_s"] = seconds_of(latency.group(5), latency.group(6))
    distribution = text.partition("Latency Distribution")[2]
    percentiles = {
        int(m.group(1)): seconds_of(m.group(2), m.group(3))
        for m in re.finditer(r"^\s*(\d+)%\s+" + _TIME + r"\s*$", distribution, re.M)
    }
    for q in (50, 75, 90, 99):
        if q not in percentiles:
            raise ValueError(f"no {q}% latency in wrk's output (was --latency given?)")
        out[f"p{q}_s"] = percentiles[q]
    exact = re.search(r"^meshgate-bench p99\.9_us (\S+)$", text, re.M)  # WRK_SCRIPT's, with -s
    if exact is not None:
        out["p999_s"] = float(exact.group(1)) / 1e6
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )  # only printed when there are some
    if socket_errors is not None:
        errors = dict(zip(errors, map(int, socket_errors.groups()), strict=True))
    out["socket_errors"] = errors
    out["socket_errors_total"] = sum(errors.values())
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)  # wrk counts statuses > 399
    out["non_2xx_3xx"] = int(status.group(1)) if status is not None else 0
    return out


# --- the proxies' logs ---------------------------------------------------------------------------


@dataclass
class LogCounts:
    """What one proxy logged: requests by status class, and those the client cut (wrk stops with
    requests in flight: meshgate logs them with no status and an error, HAProxy with a
    termination state starting with ``C``, nginx with status 499)."""

    lines: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    cut_by_client: int = 0
    other_errors: dict[str, int] = field(default_factory=dict)

    def answered(self, status: int) -> None:
        label = _status_class(status)
        self.by_class[label] = self.by_class.get(label, 0) + 1

    def error(self, text: str) -> None:
        self.other_errors[text] = self.other_errors.get(text, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "by_class": dict(sorted(self.by_class.items())),
            "cut_by_client": self.cut_by_client,
            "other_errors": dict(sorted(self.other_errors.items())),
        }


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def _lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            yield from file
    except OSError:
        return


def count_meshgate_log(path: Path) -> LogCounts:
    """meshgate's JSON access log: one object per request."""
    counts = LogCounts()
    for line in _lines(path):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        counts.lines += 1
        status = int(entry.get("status") or 0)
        error = str(entry.get("error") or "")
        if status == 0 and error in ("client went away", "client closed before sending the whole request"):
            counts.cut_by_client += 1
            continue
        counts.answered(status)
        if error:
            counts.error(error)
    return counts


#: option httplog: client, [accept date], frontend, backend/server, Th/Ti/TR/Tw/Tc/Tr/Ta or
#: TR/Tw/Tc/Tr/Ta, status, bytes, captured cookies (2), termination state, ...
_HTTPLOG: Final = re.compile(r"^\S+ \[[^\]]+\] \S+ \S+ \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) ")


def count_haproxy_log(path: Path) -> LogCounts:
    """HAProxy's httplog lines (the process's own notices are skipped)."""
    counts = LogCounts()
    for line in _lines(path):
        match = _HTTPLOG.match(line)
        if match is None:
            continue
        counts.lines += 1
        status, state = int(match.group(1)), match.group(2)
        if state[0] == "C":
            counts.cut_by_client += 1
            continue
        counts.answered(status)
        if state[:2] != "--":
            counts.error(f"termination state {state}")
    return counts


def count_nginx_log(path: Path) -> LogCounts:
    """The nginx proxy's JSON access log (``NGINX_LOG_FORMAT``): one object per request; 499 is
    nginx's status for a client that closed first. A request nginx sent upstream more than once
    (``upstream_status`` lists each try) counts as an error, as meshgate's retries do."""
    counts = LogCounts()
    for line in _lines(path):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        counts.lines += 1
        status = int(entry.get("status") or 0)
        if status == 499:
            counts.cut_by_client += 1
            continue
        counts.answered(status)
        tries = str(entry.get("upstream_status") or "").count(",") + 1
        if tries > 1:
            counts.error(f"sent upstream {tries} times")
    return counts


def truncate(path: Path) -> None:
    """Empty a log its writer appends to (O_APPEND: the next line goes to the new end)."""
    if path.exists():
        with path.open("r+b") as file:
            file.truncate(0)

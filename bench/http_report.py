"""The ``http`` scenario's record as Markdown: the figures side by side, every round, what the
proxies counted over the run, and the profile's top functions when there is one."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bench.harness import markdown_table, mib

LABELS = {"meshgate": "meshgate", "haproxy": "HAProxy", "nginx_proxy": "nginx proxy"}
#: the proxies' columns, in the order of the rounds ("nginx" alone is the workload)
PROXIES = ("meshgate", "haproxy", "nginx_proxy")


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.2f} ms"


def render(record: dict[str, Any]) -> str:
    p, m, setup = record["params"], record["machine"], record["setup"]
    summary = record.get("summary", {})
    head = (
        f"## http: one HTTP/1.1 proxy hop, meshgate vs HAProxy and nginx "
        f"({p['rounds']} rounds x {p['seconds']} s each, {p['connections']} connections"
        f"{', quick' if p['quick'] else ''})\n\n"
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, at end "
        f"{record.get('loadavg_at_end', 'n/a')}, Python {m['python']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}; {record['started_at']}\n\n"
        f"Hop: {setup['wrk']} (`-t1 -c{p['connections']} -d{p['seconds']}s --latency`, keep-alive) → "
        "proxy → nginx "
        f"{setup['nginx']} (one process, `return 200` with a {setup['body_bytes']}-byte body, keep-alive), "
        "plain HTTP/1.1 on 127.0.0.1. "
        f"meshgate: `bench.http_node` ({setup['meshgate_event_loop']}): the local proxy's inbound "
        "request path without TLS (`Site` → `HttpUpstreams` → one cluster), golden metrics on, JSON "
        "access log of every request to a file. "
        f"HAProxy: {setup['haproxy']}, `mode http`, `nbthread 1`, `http-reuse safe`, `option httplog` "
        "to a file, X-Forwarded-For/-Proto, Forwarded and a request id added as meshgate does. "
        + _nginx_proxy_note(record)
        + f"Each round: {setup['warmup_s']['before_each_round']} s of wrk to warm up (not measured), "
        f"then the measured run; rounds alternate {', '.join(LABELS[n] for n in _names(record))}, "
        "meshgate, …\n\n"
        f"Pinning: {setup['pinning']}.\n\n"
    )
    names = [name for name in _names(record) if name in summary]
    peers = [name for name in names if name != "meshgate"]
    rows = _figures(record, names, peers) if "meshgate" in names else []
    header = ["figure", *(LABELS[n] for n in names), *(f"meshgate / {LABELS[n]}" for n in peers)]
    out = head + markdown_table(header, rows) + "\n"
    out += (
        "\nRequests/s and latency: wrk's (latency from each request's send to its response, per "
        "connection; wrk is closed-loop, so a slower proxy also gets fewer requests). CPU per "
        "request: the proxy process's utime+stime (/proc/<pid>/stat) from just before wrk starts to "
        "0.6 s after it exits (its connections closed, the proxies' logs flushed), over the requests "
        "wrk completed. The proxy's CPU use near 100 % means the proxy's core was the bottleneck; "
        "well below, the load's core (wrk and nginx) was, and requests/s compares less than CPU per "
        "request does. "
        + _irq_note(setup.get("irq_time_accounting"))
        + " A ratio above 1 is more requests/s, resp. more latency or CPU per request, for meshgate.\n"
    )
    problems = record.get("problems")
    if problems:
        out += "\n**Problems seen:**\n\n" + "".join(f"- {p}\n" for p in problems)
    elif problems is not None:
        out += (
            "\nNo problem seen: every measured request answered 2xx, no socket error, no "
            "upstream error, refusal or retry counted by meshgate, nothing in the nginx proxy's "
            "error log.\n"
        )
    out += _rounds(record)
    out += _counted(record)
    out += _profile(record)
    return out


def _names(record: dict[str, Any]) -> list[str]:
    """The proxies the record measured, in the rounds' order (a record from before the nginx
    proxy has two)."""
    summary = record.get("summary") or {}
    ran = {r["proxy"] for r in record.get("rounds", [])}
    return [name for name in PROXIES if name in summary or name in ran]


def _nginx_proxy_note(record: dict[str, Any]) -> str:
    if "nginx_proxy" not in _names(record):
        return ""
    return (
        f"nginx proxy: nginx {record['setup']['nginx']}, one process (`master_process off`), "
        "`proxy_pass` over HTTP/1.1 to an `upstream` with `keepalive` "
        f"{record['params']['connections']}, the same headers added and dropped, a JSON access log "
        "line per request to a file (`buffer=64k flush=250ms`). "
    )


def _figures(record: dict[str, Any], names: list[str], peers: list[str]) -> list[list[str]]:
    """The main table's rows: one column per proxy in ``names``, then meshgate over each peer."""
    summary, setup = record["summary"], record["setup"]
    s = {name: summary[name] for name in names}
    ratios = [summary.get(f"meshgate_over_{peer}", {}) for peer in peers]
    blank = [""] * len(peers)

    def line(label: str, cell: Callable[[dict[str, Any]], str], ratio: str | None = None) -> list[str]:
        shown = [_num(r.get(ratio), ".2f") for r in ratios] if ratio else blank
        return [label, *(cell(s[name]) for name in names), *shown]

    def rps(x: dict[str, Any]) -> str:
        return (
            f"{_num(x['median_rps'], ',.0f')} ({_num(x['min_rps'], ',.0f')} to {_num(x['max_rps'], ',.0f')})"
        )

    def cpu(x: dict[str, Any]) -> str:
        return (
            f"{_num(x['median_cpu_us_per_request'], '.1f', ' µs')} "
            f"({_num(x['min_cpu_us_per_request'], '.1f')} to {_num(x['max_cpu_us_per_request'], '.1f')})"
        )

    def errors(x: dict[str, Any]) -> str:
        e = x["socket_errors_total"]
        return " / ".join(str(e.get(k, 0)) for k in ("connect", "read", "write", "timeout"))

    def logged(x: dict[str, Any]) -> str:
        by_class = ", ".join(f"{k} {v:,}" for k, v in sorted(x["logged_by_class_total"].items()))
        return f"{by_class or 'none'}; cut by wrk's stop: {x['logged_cut_by_client_total']}"

    rounds_ok = " / ".join(str(s[name]["rounds_ok"]) for name in names)
    rows = [
        line(f"requests/s, median of rounds (min to max); rounds ok: {rounds_ok}", rps, "rps"),
        line("latency p50 (wrk), median of rounds", lambda x: _ms(x["median_p50_s"]), "p50"),
        line("latency p99 (wrk), median of rounds", lambda x: _ms(x["median_p99_s"]), "p99"),
        line("latency p99.9 (wrk), median of rounds", lambda x: _ms(x.get("median_p999_s")), "p999"),
        line("CPU per request, proxy utime+stime / requests, median (min to max)", cpu, "cpu_us_per_request"),
        line(
            "proxy's CPU use during a round (CPU s / wall s), median",
            lambda x: _num(x["median_proxy_busy"] * 100, ".0f", " %"),
        ),
        line(
            "the workload nginx's CPU per request, median",
            lambda x: _num(x["median_nginx_cpu_us_per_request"], ".1f", " µs"),
        ),
        line("requests completed (wrk), all rounds", lambda x: f"{x['requests_total']:,}"),
        line(
            "responses with status ≥ 400 (wrk's non-2xx/3xx), all rounds",
            lambda x: str(x["non_2xx_3xx_total"]),
        ),
        line("socket errors (wrk): connect / read / write / timeout, all rounds", errors),
        line("requests the proxy logged, by status class, all rounds", logged),
    ]
    rss = record.get("rss", {})
    if rss:

        def rss_of(name: str, key: str) -> str:
            return mib(rss.get(name, {}).get(key, math.nan))

        rows.append(["RSS idle (before any connection)", *(rss_of(n, "idle_bytes") for n in names), *blank])
        if "after_rounds_bytes" in rss.get("meshgate", {}):
            rows.append(
                [
                    "RSS after the rounds / peak",
                    *(f"{rss_of(n, 'after_rounds_bytes')} / {rss_of(n, 'peak_bytes')}" for n in names),
                    *blank,
                ]
            )
    threads = setup.get("threads_after_rounds")
    if threads:
        how = {"meshgate": " (event loop + libuv's worker pool)", "haproxy": " (nbthread 1)"}
        rows.append(["threads", *(f"{threads.get(n, 'n/a')}{how.get(n, '')}" for n in names), *blank])
    pinned = setup.get("pinned_cpus", {})
    if pinned.get("proxies"):

        def core(x: dict[str, Any]) -> str:
            c = x["median_proxy_cpus"]
            keys = ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
            return " / ".join(_num(c[k], ".2f") for k in keys) + " s"

        rows.append(
            line(
                f"the proxies' CPU {','.join(map(str, pinned['proxies']))} during a round: idle / "
                "interrupts / other processes / stolen, median",
                core,
            )
        )
        rows.append(
            line(
                f"the load's CPU {','.join(map(str, pinned['load']))} (wrk, nginx) idle during a round, median",
                lambda x: _num(x["median_load_cpus_idle_s"], ".2f", " s"),
            )
        )
    rows.append(
        line(
            "CPU used by the rest of the machine during a round, median",
            lambda x: _num(x["median_rest_of_machine_s"], ".1f", " s"),
        )
    )
    return rows


def _irq_note(irq_time_accounting: bool | None) -> str:
    if irq_time_accounting is False:
        return (
            "This kernel accounts CPU time by ticks (no CONFIG_IRQ_TIME_ACCOUNTING): the loopback "
            "receive work a send runs in softirq is charged to whichever process was running, "
            "mostly the sender, so part of nginx's and wrk's kernel work lands on the proxy and "
            "the other way round, the same for every proxy."
        )
    if irq_time_accounting:
        return (
            "This kernel accounts interrupt time apart (CONFIG_IRQ_TIME_ACCOUNTING): softirq work, "
            "such as loopback's receive path, is charged to no process and is not in these figures."
        )
    return "Whether interrupt time is in the processes' figures depends on the kernel (config not readable)."


def _rounds(record: dict[str, Any]) -> str:
    rounds = record.get("rounds", [])
    if not rounds:
        return ""
    rows = []
    for r in rounds:
        if r.get("error"):
            rows.append([str(r["round"]), LABELS[r["proxy"]], "FAILED: " + r["error"], *[""] * 9])
            continue
        logged = r["logged"]
        by_class = ", ".join(f"{k} {v}" for k, v in sorted(logged["by_class"].items()))
        rows.append(
            [
                str(r["round"]),
                LABELS[r["proxy"]],
                _num(r["rps"], ",.0f"),
                _ms(r["p50_s"]),
                _ms(r["p99_s"]),
                _ms(r.get("latency_max_s")),
                _num(r["cpu_s"], ".2f", " s"),
                _num(r["cpu_us_per_request"], ".1f"),
                _num(r["proxy_busy"] * 100, ".0f", " %"),
                _num(r["load_cpus"]["idle_s"], ".2f", " s") if "load_cpus" in r else "n/a",
                f"{r['non_2xx_3xx']} / {r['socket_errors_total']}",
                f"{by_class}; cut {logged['cut_by_client']}",
            ]
        )
    return (
        "\n### rounds\n\n"
        + markdown_table(
            [
                "round",
                "proxy",
                "req/s",
                "p50",
                "p99",
                "max",
                "proxy CPU",
                "CPU µs/req",
                "proxy busy",
                "load CPU idle",
                "≥400 / socket errors",
                "proxy logged",
            ],
            rows,
        )
        + "\n"
    )


def _counted(record: dict[str, Any]) -> str:
    """What each proxy counted over the whole run (warm-ups, checks and the profile included)."""
    rows: list[list[str]] = []
    stats = record.get("meshgate_stats")
    if stats:
        listener = stats.get("listeners", {}).get("inbound", {})
        cluster = stats.get("clusters", {}).get("instances", {})
        for key, http in stats.get("http", {}).items():
            requests = ", ".join(f"{k} {v:,}" for k, v in sorted(http["requests"].items()))
            rows.append(
                [
                    "meshgate",
                    f"{key}: requests {requests or 'none'}; {listener.get('accepted', 0)} connections "
                    f"accepted; {cluster.get('connect_attempts', 0)} connections to nginx opened, "
                    f"{stats.get('pooled_idle_connections', 0)} idle in the pool at the end; "
                    f"{stats.get('access_log_lines', 0):,} access log lines",
                    f"upstream errors {http['upstream_errors'] or 'none'}, refused {http['refused'] or 'none'}, "
                    f"retries {http['retries']}, connect failures {cluster.get('connect_failures', 0)}",
                ]
            )
    elif record.get("rounds"):
        rows.append(["meshgate", "no stats (the process did not exit cleanly)", ""])
    server = record.get("haproxy_server")
    if server:
        rows.append(
            [
                "HAProxy",
                f"server nginx: {server.get('stot', 0):,} requests (2xx {server.get('hrsp_2xx', 0):,}); "
                f"{server.get('connect', 0)} connections opened, {server.get('reuse', 0):,} requests on a "
                "reused connection",
                f"connection errors {server.get('econ', 0)}, response errors {server.get('eresp', 0)}, "
                f"retries {server.get('wretr', 0)}, 5xx {server.get('hrsp_5xx', 0)}",
            ]
        )
    if "nginx_proxy_error_log" in record:
        errors = record["nginx_proxy_error_log"]
        rows.append(
            [
                "nginx proxy",
                "per request only (its access log, counted per round above)",
                f"error log (warn and above): {len(errors)} lines"
                + (f", the last: {errors[-1]}" if errors else ""),
            ]
        )
    if not rows:
        return ""
    return (
        "\n### what the proxies counted, whole run (check, warm-ups and profile included)\n\n"
        + markdown_table(["proxy", "requests and connections", "failures counted"], rows)
        + "\n"
    )


def _profile(record: dict[str, Any]) -> str:
    profile = record.get("profile")
    if not profile:
        return ""
    if "skipped" in profile:
        return f"\n### profile\n\nskipped: {profile['skipped']}\n"
    raw = profile.get("raw", {})
    under = raw.get("round_under_profiler", {})
    out = (
        f"\n### profile: the meshgate node under py-spy ({profile['rate_hz']} Hz, not a result)\n\n"
        f"Files in `{profile['dir']}`: `meshgate.speedscope.json` (py-spy's speedscope output of one "
        "extra round; open it at https://www.speedscope.app), `meshgate.collapsed.txt` (collapsed "
        "stacks of a second extra round, summarised below), `meshgate.dumps.txt` (three `py-spy "
        "dump`s taken during that round). Under the profiler: "
        f"{_num(under.get('rps'), ',.0f')} requests/s, "
        f"{_num(under.get('cpu_us_per_request'), '.1f')} CPU µs/request. Python frames only (no "
        "`--native`): time in C (httptools, uvloop's transports, json) is charged to the Python "
        "function that called it; time with no Python frame at all is uvloop's loop itself.\n\n"
        f"Top {len(raw.get('self', []))} functions by own time, of {raw.get('samples', 0)} samples:\n\n"
    )
    out += markdown_table(
        ["#", "function", "own %", "samples"],
        [
            [str(i + 1), f"`{e['function']}`", f"{e['percent']}", str(e["samples"])]
            for i, e in enumerate(raw.get("self", []))
        ],
    )
    out += "\n\nTop 15 by total time (on the stack):\n\n"
    out += markdown_table(
        ["function", "total %"],
        [[f"`{e['function']}`", f"{e['percent']}"] for e in raw.get("total", [])[:15]],
    )
    return out + "\n"

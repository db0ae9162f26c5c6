"""The ``mesh`` scenario's record as Markdown: the two chains side by side, CPU per request per
hop, every round, and the profile's top functions per hop when there is one."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import markdown_table, mib
from bench.http_report import _irq_note

LABELS = {"meshgate": "meshgate", "haproxy": "HAProxy"}
HOPS = ("edge", "ingress", "local")


def num(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.2f} ms"


def machine_line(record: dict[str, Any]) -> str:
    m = record["machine"]
    return (
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, at end "
        f"{record.get('loadavg_at_end', 'n/a')}, Python {m['python']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}; {record['started_at']}"
    )


CHAINS_TEXT = (
    "meshgate: `meshgate edge run` (HTTPS terminated with the GlobalService's certificate, routed by Host, "
    "keep-alive mTLS to the zone's ingress) → `meshgate proxy run --role ingress` (SNI passthrough) → "
    "`meshgate proxy run --role local` (mTLS terminated, the caller verified, keep-alive to nginx), "
    "configured by a global CP and a zone CP, access logs off (their default). "
    "HAProxy: three processes, `nbthread 1` each: `mode http` with `ssl crt` (the same ECDSA P-256 certificate) "
    "and a `server … ssl crt … verify required sni …` (`http-reuse safe`) → `mode tcp` routing on "
    "`req.ssl_sni` → `mode http` with `ssl crt … ca-file … verify required` and keep-alive to nginx; "
    "headers rewritten as meshgate does, errors logged only (`dontlog-normal`)."
)


def render(record: dict[str, Any]) -> str:
    p, setup = record["params"], record["setup"]
    summary = record.get("summary", {})
    head = (
        f"## mesh: the mesh path (HTTPS edge → ingress → mTLS local proxy), meshgate vs HAProxy "
        f"({p['rounds']} rounds x {p['seconds']} s each, {p['connections']} connections"
        f"{', quick' if p['quick'] else ''})\n\n"
        f"{machine_line(record)}\n\n"
        f"Load: {setup['wrk']} (`-t1 -c{p['connections']} -d{p['seconds']}s`, HTTPS keep-alive, `Host: "
        f"{setup['hostname']}`, a Lua `done` callback for p99.9) → chain → nginx {setup['nginx']} (one process, "
        "`return 200` with a 100-byte body). "
        f"{CHAINS_TEXT} Each round: {setup['warmup_s']['before_each_round']} s of wrk to warm up (not measured), "
        "then the measured run; rounds alternate meshgate, HAProxy, meshgate, …\n\n"
        f"Pinning: {setup['pinning']}.\n\n"
    )
    mg, hp = summary.get("meshgate", {}), summary.get("haproxy", {})
    ratio = summary.get("meshgate_over_haproxy", {})
    rows: list[list[str]] = []
    if mg and hp:

        def rps(s: dict[str, Any]) -> str:
            return (
                f"{num(s['median_rps'], ',.0f')} ({num(s['min_rps'], ',.0f')} to {num(s['max_rps'], ',.0f')})"
            )

        rows.append(
            [
                f"requests/s, median of rounds (min to max); rounds ok {mg['rounds_ok']} / {hp['rounds_ok']}",
                rps(mg),
                rps(hp),
                num(ratio.get("rps"), ".2f"),
            ]
        )
        for q, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            rows.append(
                [f"latency {label} (wrk), median of rounds", ms(mg[f"median_{q}_s"]), ms(hp[f"median_{q}_s"]),
                 num(ratio.get(q), ".2f")]
            )  # fmt: skip
        rows.append(
            [
                "CPU per request, the chain's three proxies (utime+stime / requests), median",
                num(mg["median_cpu_us_per_request"], ".1f", " µs"),
                num(hp["median_cpu_us_per_request"], ".1f", " µs"),
                num(ratio.get("cpu_us_per_request"), ".2f"),
            ]
        )
        by_hop = ratio.get("cpu_us_per_request_by_hop", {})
        for hop in HOPS:
            rows.append(
                [
                    f"… of which {hop}",
                    num(mg["median_cpu_us_per_request_by_hop"][hop], ".1f", " µs"),
                    num(hp["median_cpu_us_per_request_by_hop"][hop], ".1f", " µs"),
                    num(by_hop.get(hop), ".2f"),
                ]
            )
        rows += [
            [
                "the proxies' CPU use during a round (CPU s / wall s, three processes on one core), median",
                num(mg["median_proxies_busy"] * 100, ".0f", " %"),
                num(hp["median_proxies_busy"] * 100, ".0f", " %"),
                "",
            ],
            [
                "nginx CPU per request, median",
                num(mg["median_nginx_cpu_us_per_request"], ".1f", " µs"),
                num(hp["median_nginx_cpu_us_per_request"], ".1f", " µs"),
                "",
            ],
            [
                "requests completed (wrk), all rounds",
                f"{mg['requests_total']:,}",
                f"{hp['requests_total']:,}",
                "",
            ],
            [
                "status ≥ 400 / socket errors (wrk), all rounds",
                f"{mg['non_2xx_3xx_total']} / {mg['socket_errors_total']}",
                f"{hp['non_2xx_3xx_total']} / {hp['socket_errors_total']}",
                "",
            ],
        ]
        if setup.get("pinned_cpus", {}).get("proxies"):

            def core(s: dict[str, Any]) -> str:
                c = s["median_proxy_cpus"]
                keys = ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
                return " / ".join(num(c[k], ".2f") for k in keys) + " s"

            rows.append(
                ["the proxies' CPU during a round: idle / interrupts / other processes / stolen, median",
                 core(mg), core(hp), ""]
            )  # fmt: skip
    rss = record.get("rss", {})
    for hop in HOPS:
        m_rss, h_rss = rss.get(f"meshgate-{hop}", {}), rss.get(f"haproxy-{hop}", {})
        if m_rss:
            rows.append(
                [
                    f"RSS of {hop}: idle / after the rounds / peak",
                    " / ".join(
                        mib(m_rss.get(k, math.nan))
                        for k in ("idle_bytes", "after_rounds_bytes", "peak_bytes")
                    ),
                    " / ".join(
                        mib(h_rss.get(k, math.nan))
                        for k in ("idle_bytes", "after_rounds_bytes", "peak_bytes")
                    ),
                    "",
                ]
            )
    out = head + markdown_table(["figure", "meshgate", "HAProxy", "meshgate / HAProxy"], rows) + "\n"
    aim = summary.get("aim_rps_ratio")
    if aim is not None:
        verdict = "met" if aim["met"] else "missed"
        out += (
            f"\nAim (issue 9): meshgate's requests/s at least {aim['aim']}x the HAProxy chain's: "
            f"**{verdict}** ({num(ratio.get('rps'), '.2f')}x). A benchmark, not a test: nothing fails on it.\n"
        )
    out += (
        "\nRequests/s and latency: wrk's (closed-loop: each connection sends its next request when the "
        "response is in, so a slower chain also gets fewer requests; latency from each request's send to "
        "its response). CPU per request: each proxy process's utime+stime (/proc/<pid>/stat) from just before "
        "wrk starts to 0.6 s after it exits, over the requests wrk completed; wrk's TLS handshakes (one per "
        "connection and round) are in it. With the proxies at about 100 % of their core, the chain's "
        "requests/s is one core's worth of proxying. " + _irq_note(setup.get("irq_time_accounting")) + "\n"
    )
    found = record.get("problems")
    if found:
        out += "\n**Problems seen:**\n\n" + "".join(f"- {p}\n" for p in found)
    elif found is not None:
        out += (
            "\nNo problem seen: every measured request answered 2xx, no socket error, no upstream error, "
            "refusal or retry counted by meshgate, no error logged by HAProxy.\n"
        )
    return out + _rounds(record) + _profile(record)


def _rounds(record: dict[str, Any]) -> str:
    rows = []
    for r in record.get("rounds", []):
        if r.get("error"):
            rows.append([str(r["round"]), LABELS[r["chain"]], "FAILED: " + r["error"], *[""] * 7])
            continue
        hops = r["cpu_us_per_request_by_hop"]
        rows.append(
            [
                str(r["round"]),
                LABELS[r["chain"]],
                num(r["rps"], ",.0f"),
                ms(r["p50_s"]),
                ms(r["p99_s"]),
                ms(r["p999_s"]),
                num(r["cpu_us_per_request"], ".1f"),
                " / ".join(num(hops[h], ".1f") for h in HOPS),
                num(r["proxies_busy"] * 100, ".0f", " %"),
                f"{r['non_2xx_3xx']} / {r['socket_errors_total']}",
            ]
        )
    if not rows:
        return ""
    headers = ["round", "chain", "req/s", "p50", "p99", "p99.9", "CPU µs/req", "edge / ingress / local",
               "proxies busy", "≥400 / socket errors"]  # fmt: skip
    return "\n### rounds\n\n" + markdown_table(headers, rows) + "\n"


def _profile(record: dict[str, Any]) -> str:
    profile = record.get("profile")
    if not profile:
        return ""
    if "skipped" in profile:
        return f"\n### profile\n\nskipped: {profile['skipped']}\n"
    under = profile.get("round_under_profiler", {})
    out = (
        f"\n### profile: the meshgate chain under py-spy ({profile['rate_hz']} Hz per process, not a result)\n\n"
        f"Collapsed stacks in `{profile['dir']}` (one file per hop). Under the profiler: "
        f"{num(under.get('rps'), ',.0f')} requests/s, {num(under.get('cpu_us_per_request'), '.1f')} CPU "
        "µs/request. Python frames only: time in C (OpenSSL, httptools, uvloop's transports) is charged to "
        "the Python function that called it; samples with no Python frame are uvloop's loop itself "
        "(polling, socket and TLS I/O, callbacks).\n"
    )
    for hop, stacks in profile.get("hops", {}).items():
        out += f"\n{hop}: top 15 functions by own time, of {stacks.get('samples', 0)} samples\n\n"
        out += markdown_table(
            ["#", "function", "own %"],
            [
                [str(i + 1), f"`{e['function']}`", f"{e['percent']}"]
                for i, e in enumerate(stacks.get("self", [])[:15])
            ],
        )
        out += "\n\nby total time (on the stack), top 10: " + "; ".join(
            f"`{e['function']}` {e['percent']} %" for e in stacks.get("total", [])[:10]
        )
        out += "\n"
    perf = profile.get("perf")
    if perf:
        out += (
            "\nCPU by library (`perf record -e cpu-clock`, one more round per chain: only what ran, kernel "
            "included; py-spy above also samples a process waiting for the core, so with three processes on "
            "one core a process preempted right after the send that woke the next hop is charged to the "
            "function that sent):\n\n"
        )
        rows = []
        for name in ("meshgate", "haproxy"):
            for hop in HOPS:
                chain = perf.get(name, {})
                entry = chain.get("hops", {}).get(hop, {})
                shares = entry.get("by_category", {})
                per_request = chain.get("round_under_profiler", {}).get("cpu_us_per_request_by_hop") or {}
                us = per_request.get(hop)
                top = "; ".join(
                    f"{s['symbol'] or s['library']} {s['percent']:.1f}"
                    for s in entry.get("top_symbols", [])[:4]
                )
                split = ", ".join(
                    f"{k} {v:.0f} %" + (f" ({v * us / 100:.0f} µs)" if us else "")
                    for k, v in shares.items()
                    if v >= 0.5
                )
                rows.append([LABELS[name], hop, num(us, ".0f", " µs"), split or "n/a", top])
        out += (
            markdown_table(
                ["chain", "hop", "CPU/request (that round)", "CPU by library", "top symbols (%)"], rows
            )
            + "\n"
        )
    return out

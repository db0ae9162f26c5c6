"""The ``memory`` scenario's record as Markdown: idle RSS and RSS per idle connection side by
side, the ratios, the issue's aims, and every measurement.

Units are decimal, as the issue's aims are written: MB = 10^6 bytes, KB = 10^3 bytes."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import markdown_table

LABELS = {
    "meshgate-proxy": "meshgate local proxy",
    "meshgate-edge": "meshgate edge",
    "haproxy": "HAProxy",
    "nginx": "nginx",
}
KIND_LABELS = {"plain": "plain HTTP", "mtls": "mTLS", "https": "HTTPS"}


def _mb(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value / 1e6:.1f} MB"


def _kb(per_1000: float | None) -> str:
    """Bytes per 1,000 connections -> KB per connection."""
    return "n/a" if per_1000 is None or math.isnan(per_1000) else f"{per_1000 / 1e6:.1f} KB"


def _x(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def render(record: dict[str, Any]) -> str:
    p, m, setup = record["params"], record["machine"], record["setup"]
    summary = record.get("summary", {})
    subjects = summary.get("subjects", {})
    head = (
        f"## memory: idle RSS, and RSS per idle keep-alive connection "
        f"({p['rounds']} rounds, {p['connections']:,} connections{', quick' if p['quick'] else ''})\n\n"
        f"{m['cpus']} CPUs, {m['memory_total_bytes'] / 2**30:.1f} GiB, load average at start "
        f"{m['loadavg_at_start']}, at end {record.get('loadavg_at_end', 'n/a')}, Python {m['python']}, "
        f"{setup['openssl']}, commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; "
        f"{record['started_at']}\n\n"
        "Each figure is a fresh process of the proxy: its RSS (VmRSS of /proc/<pid>/status) once it is "
        "ready and has settled, with no connection yet (idle); again after a client process opened and "
        f"closed {p['warmup']} warm-up connections (base); and with N connections held idle by that "
        "client, each with one request answered (TLS handshake, request and response done). Per "
        "connection: (held - base) / N. The client is a separate process, not counted. "
        f"Medians over rounds (min to max). meshgate: `meshgate proxy run --role local` enrolled "
        "through a real global CP and zone CP (plain: its `<service>.mesh` HTTP listener, on to "
        "another local proxy over pooled mTLS; mTLS: its inbound, with a mesh client certificate) "
        "and `meshgate edge run` without BGP (plain HTTP and terminating HTTPS). "
        f"{setup.get('haproxy', 'HAProxy')} (`nbthread 1`, `mode http`) and {setup.get('nginx', 'nginx')} "
        "(one process) proxy to the same nginx workload with the same certificates. Units: MB = 10^6 "
        "bytes, KB = 10^3 bytes.\n\n"
    )
    rows = []
    for name in ("meshgate-proxy", "meshgate-edge", "haproxy", "nginx"):
        s = subjects.get(name)
        if not s:
            continue
        cells = [
            LABELS[name],
            f"{_mb(s['idle_rss_bytes'])} ({_mb(s['idle_rss_min_bytes'])} to {_mb(s['idle_rss_max_bytes'])})",
            f"{_mb(s['idle_anon_bytes'])} / {_mb(s['idle_file_bytes'])}",
            _mb(s["idle_pss_bytes"]),
        ]
        for kind in ("plain", "mtls", "https"):
            k = s["kinds"].get(kind)
            cells.append(
                f"{_kb(k['per_1000_bytes'])} ({_kb(k['per_1000_min_bytes'])} to {_kb(k['per_1000_max_bytes'])})"
                if k and k["rounds_ok"]
                else ("failed" if k else "")
            )
        cells.append(f"{s['idle_threads']:.0f}")
        rows.append(cells)
    out = head
    if rows:
        out += (
            markdown_table(
                [
                    "proxy",
                    "idle RSS",
                    "of which anon / file",
                    "idle PSS",
                    "per idle plain HTTP connection",
                    "per idle mTLS connection",
                    "per idle HTTPS connection",
                    "threads",
                ],
                rows,
            )
            + "\n"
        )
    ratios = summary.get("ratios", {})
    if ratios:
        ratio_rows = []
        for key, values in ratios.items():
            name, peer = key.split("/")
            ratio_rows.append(
                [
                    f"{LABELS[name]} / {LABELS[peer]}",
                    _x(values.get("idle")),
                    *(_x(values[kind]) if kind in values else "" for kind in ("plain", "mtls", "https")),
                ]
            )
        out += (
            "\nRatios of the medians (above 1: meshgate uses more):\n\n"
            + markdown_table(
                ["", "idle RSS", "per plain HTTP conn.", "per mTLS conn.", "per HTTPS conn."], ratio_rows
            )
            + "\n"
        )
    aims = summary.get("aims", [])
    if aims:
        out += "\nThe issue's aims:\n\n"
        for aim in aims:
            value = _mb(aim["value"]) if aim["aim"].startswith("idle") else f"{aim['value'] / 1e3:.1f} KB"
            out += (
                f"- {LABELS[aim['subject']]}: {aim['aim']}: {value}, {'met' if aim['met'] else 'NOT met'}\n"
            )
    out += _measurements(record)
    problems = record.get("problems")
    if problems:
        out += "\n**Problems seen:**\n\n" + "".join(f"- {p}\n" for p in problems)
    elif problems is not None:
        out += (
            "\nNo problem seen: every connection was set up and answered 200 with keep-alive, none "
            "was closed while held, every reading settled.\n"
        )
    return out


def _measurements(record: dict[str, Any]) -> str:
    rows = []
    for m in record.get("measurements", []):
        if m.get("error"):
            rows.append(
                [
                    str(m["round"]),
                    LABELS[m["subject"]],
                    KIND_LABELS[m["kind"]],
                    "FAILED: " + m["error"],
                    *[""] * 8,
                ]
            )
            continue
        tls = m.get("tls") or {}
        rows.append(
            [
                str(m["round"]),
                LABELS[m["subject"]],
                KIND_LABELS[m["kind"]],
                _mb(m["idle"]["rss"]),
                _mb(m["base"]["rss"]),
                _mb(m["held_reading"]["rss"]),
                _kb(m["per_1000_bytes"]),
                _kb(m["per_1000_anon_bytes"]),
                _kb(m["per_1000_pss_bytes"]),
                f"{m['held']:,} / +{m['sockets_added']:,}",
                f"{tls.get('version', '')} {tls.get('cipher', '')}".strip() or "-",
                f"{m['ready_after_s']:.1f} s",
            ]
        )
    if not rows:
        return ""
    return (
        "\n### measurements\n\n"
        + markdown_table(
            [
                "round",
                "proxy",
                "connections",
                "idle",
                "base",
                "held",
                "per conn. (RSS)",
                "per conn. (anon)",
                "per conn. (PSS)",
                "held / sockets added",
                "TLS",
                "ready after",
            ],
            rows,
        )
        + "\n\nper conn. (anon): RssAnon, the process's private memory; (PSS): smaps_rollup's Pss. "
        "Sockets added: the proxy's open sockets with the connections held less before (its "
        "connections to the client, plus any upstream connections it opened for them).\n"
    )

"""The ``l4`` scenario's record as Markdown: the figures side by side, every round, and what the
proxies counted (errors through either chain would show there)."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import markdown_table, mib

LABELS = {"meshgate": "meshgate", "haproxy": "HAProxy"}
HOPS = ("a", "ingress", "b")


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def render(record: dict[str, Any]) -> str:
    p, m, setup = record["params"], record["machine"], record["setup"]
    summary = record.get("summary", {})
    head = (
        f"## l4: mTLS L4 relay chain throughput, meshgate vs HAProxy "
        f"({p['rounds']} rounds x {p['seconds']} s each{', quick' if p['quick'] else ''})\n\n"
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, at end "
        f"{record.get('loadavg_at_end', 'n/a')}, Python {m['python']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}; {record['started_at']}\n\n"
        "Chain: iperf3 client → A (plain TCP in, mTLS out as spiffe://…/svc/a, SNI b.two.svc.meshgate) "
        "→ zone ingress (SNI passthrough, no TLS termination) → B (mTLS termination, client certificate "
        "required) → iperf3 server, all on 127.0.0.1, each hop its own process. "
        f"meshgate: `bench.l4_node` ({setup['meshgate_event_loop']}). "
        f"HAProxy: {setup['haproxy'].split(' - ')[0]}, TCP mode, `nbthread 1` per process. "
        f"Load: {setup['iperf3'].split(' (')[0]}, {p['streams']} stream(s), client → server, "
        "a fresh one-test server per round; rounds alternate meshgate, HAProxy, meshgate, …\n\n"
        f"Pinning: {setup['pinning']}.\n\n"
    )
    rows: list[list[str]] = []
    mg, hp = summary.get("meshgate", {}), summary.get("haproxy", {})
    ratio = summary.get("meshgate_over_haproxy", {})
    if mg and hp:

        def through(s: dict[str, Any]) -> str:
            return (
                f"{_num(s['median_gbit_per_s'], '.2f', ' Gbit/s')} "
                f"({_num(s['min_gbit_per_s'], '.2f')} to {_num(s['max_gbit_per_s'], '.2f')})"
            )

        def by_hop(s: dict[str, Any]) -> str:
            return " / ".join(_num(s["median_cpu_s_per_gb_by_hop"][hop], ".2f") for hop in HOPS) + " s"

        rows += [
            [
                f"throughput, median of rounds (min to max); rounds ok: {mg['rounds_ok']} / {hp['rounds_ok']}",
                through(mg),
                through(hp),
                _num(ratio.get("throughput"), ".2f"),
            ],
            [
                "CPU per GB, three proxies together (utime+stime), median of rounds",
                _num(mg["median_cpu_s_per_gb"], ".2f", " s"),
                _num(hp["median_cpu_s_per_gb"], ".2f", " s"),
                _num(ratio.get("cpu_s_per_gb"), ".2f"),
            ],
            ["  of which A / ingress / B", by_hop(mg), by_hop(hp), ""],
        ]
    rss = record.get("rss", {})
    if rss:

        def rss_row(name: str, key: str) -> str:
            return " / ".join(mib(rss[name][hop].get(key, math.nan)) for hop in HOPS)

        rows.append(
            [
                "RSS idle, A / ingress / B",
                rss_row("meshgate", "idle_bytes"),
                rss_row("haproxy", "idle_bytes"),
                "",
            ]
        )
        if "after_rounds_bytes" in rss["meshgate"]["a"]:
            rows.append(
                [
                    "RSS after the rounds, A / ingress / B",
                    rss_row("meshgate", "after_rounds_bytes"),
                    rss_row("haproxy", "after_rounds_bytes"),
                    "",
                ]
            )
            rows.append(
                [
                    "peak RSS, A / ingress / B",
                    rss_row("meshgate", "peak_bytes"),
                    rss_row("haproxy", "peak_bytes"),
                    "",
                ]
            )
    threads = setup.get("threads_after_rounds")
    if threads:
        rows.append(
            [
                "threads per process, A / ingress / B",
                " / ".join(str(threads["meshgate"][hop]) for hop in HOPS)
                + " (event loop + libuv's worker pool)",
                " / ".join(str(threads["haproxy"][hop]) for hop in HOPS) + " (nbthread 1)",
                "",
            ]
        )
    tls = setup.get("tls", {})
    if tls:

        def tls_of(name: str) -> str:
            t = tls.get(name) or {}
            return f"{t.get('version')} {t.get('cipher')}" if t.get("version") else "n/a"

        rows.append(["TLS between A and B", tls_of("meshgate"), tls_of("haproxy"), ""])
    if mg and hp:
        pinned = setup.get("pinned_cpus", {}).get("proxies")
        if pinned:

            def core(s: dict[str, Any]) -> str:
                c = s["median_proxy_cpus"]
                keys = ("idle_s", "interrupts_s", "other_processes_s", "steal_s")
                return " / ".join(_num(c[k], ".2f") for k in keys) + " s"

            rows.append(
                [
                    f"the proxies' CPU {','.join(map(str, pinned))} during a round: idle / interrupts / "
                    "other processes / stolen, median",
                    core(mg),
                    core(hp),
                    "",
                ]
            )
        rows.append(
            [
                "CPU used by the rest of the machine during a round, median",
                _num(mg["median_rest_of_machine_s"], ".1f", " s"),
                _num(hp["median_rest_of_machine_s"], ".1f", " s"),
                "",
            ]
        )
    out = head + markdown_table(["figure", "meshgate", "HAProxy", "meshgate / HAProxy"], rows) + "\n"
    out += (
        "\nThroughput: iperf3's receiver-side rate. CPU per GB: the chain's three proxy processes' "
        "utime+stime over the round (from /proc/<pid>/stat, the iperf3 test's set-up and teardown "
        "included) per 10^9 payload bytes received by the iperf3 server. "
        + _irq_note(setup.get("irq_time_accounting"))
        + " The proxies' CPU (when pinned), from /proc/stat: idle time, interrupt time (irq + "
        "softirq), time of other processes and interrupts not charged to the proxies (the machine "
        "is shared), time stolen by the hypervisor. Rest of the machine: all CPUs' busy time "
        "less the proxies', iperf3's and the bench's (counters sampled at different grains: a few "
        "tenths of a second either side of zero mean nothing else ran).\n"
    )

    rounds = record.get("rounds", [])
    if rounds:
        round_rows = []
        for r in rounds:
            if r.get("error"):
                round_rows.append(
                    [str(r["round"]), LABELS[r["chain"]], "FAILED: " + r["error"], "", "", "", "", "", ""]
                )
                continue
            round_rows.append(
                [
                    str(r["round"]),
                    LABELS[r["chain"]],
                    _num(r["gbit_per_s"], ".2f"),
                    _num(r["bytes"] / 1e9, ".2f"),
                    " / ".join(_num(r["cpu_s"][hop], ".2f") for hop in HOPS),
                    _num(r["cpu_s_per_gb"], ".2f"),
                    _num(r["iperf3_cpu_s"], ".2f", " s"),
                    " / ".join(
                        _num(r["proxy_cpus"][k], ".2f")
                        for k in ("idle_s", "interrupts_s", "other_processes_s")
                    )
                    if "proxy_cpus" in r
                    else "n/a",
                    _num(r["rest_of_machine_s"], ".1f", " s"),
                ]
            )
        out += (
            "\n### rounds\n\n"
            + markdown_table(
                [
                    "round",
                    "chain",
                    "Gbit/s",
                    "GB",
                    "CPU s A / ingress / B",
                    "CPU s/GB",
                    "iperf3 CPU",
                    "proxies' CPU: idle / irq / others",
                    "rest of machine",
                ],
                round_rows,
            )
            + "\n"
        )
    out += _connections(record)
    return out


def _irq_note(irq_time_accounting: bool | None) -> str:
    if irq_time_accounting is False:
        return (
            "This kernel accounts CPU time by ticks (no CONFIG_IRQ_TIME_ACCOUNTING): interrupt "
            "work, such as the loopback receive path that a send runs in softirq, is charged to "
            "the process that was running, so it is mostly in the proxies' figures; which hop it "
            "lands on depends on which process was running at the time (on a shared core the "
            "split between A, ingress and B moves from round to round), so the sum over the "
            "three hops is the robust figure."
        )
    if irq_time_accounting:
        return (
            "This kernel accounts interrupt time apart (CONFIG_IRQ_TIME_ACCOUNTING): softirq work, "
            "such as loopback's receive path, is charged to no process and is not in these figures."
        )
    return "Whether interrupt time is in the processes' figures depends on the kernel (config not readable)."


def _connections(record: dict[str, Any]) -> str:
    """What each proxy counted over the whole run (the check tests included)."""
    rows: list[list[str]] = []
    stats = record.get("proxy_stats") or {}
    for hop in HOPS:
        snapshot = stats.get(hop)
        if not snapshot:
            rows.append(["meshgate", hop, "no stats (the process did not exit cleanly)", ""])
            continue
        reasons: dict[str, int] = {}
        problems: dict[str, int] = {}
        accepted = 0
        for name, listener in snapshot["listeners"].items():
            accepted += listener["accepted"]
            for reason, n in listener["close_reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
            for reason, n in listener["refused"].items():
                if n:
                    problems[f"{name} refused {reason}"] = n
            for key in ("tls_handshake_failures", "peer_rejected"):
                if listener[key]:
                    problems[f"{name} {key}"] = listener[key]
        for name, cluster in snapshot["clusters"].items():
            for key in ("connect_failures", "tls_failures", "identity_failures", "ejections"):
                if cluster[key]:
                    problems[f"cluster {name} {key}"] = cluster[key]
        rows.append(
            [
                "meshgate",
                hop,
                f"{accepted} accepted; relays closed: "
                + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"),
                ", ".join(f"{k} {v}" for k, v in sorted(problems.items())) or "none",
            ]
        )
    for hop, sessions in (record.get("haproxy_sessions") or {}).items():
        states = ", ".join(f"{k} {v}" for k, v in sorted(sessions["termination_states"].items()))
        rows.append(
            ["HAProxy", hop, f"{sessions['sessions']} sessions; termination states: {states or 'none'}", ""]
        )
    if not rows:
        return ""
    return (
        "\n### connections, whole run (check tests included)\n\n"
        + markdown_table(["chain", "hop", "how connections ended", "failures counted"], rows)
        + "\n\nEach iperf3 test is one control connection and one data connection per stream, so "
        "every hop should count 2 x streams connections per test. At the end of a test the "
        "iperf3 server closes the data connection, at times with bytes still unread (a reset), "
        "so that connection's end comes from the server side in both chains (meshgate: "
        "`upstream_closed` or `upstream_reset`; HAProxy's two-letter termination state: `SD`, "
        "the server side ended it during the data phase; `--` is a normal close). HAProxy counts "
        "no failures apart from these states: any state starting with another letter than `-` "
        "or `S` (C: client side, P/R/I: proxy, resource, internal, c/s: timeouts) would be one.\n"
    )

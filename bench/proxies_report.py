"""The ``proxies`` scenario's Markdown report, from its record."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import kib, markdown_table, mib, ms, secs

_RSS_KEYS = (
    "before_proxies_rss_bytes",
    "half_proxies_rss_bytes",
    "after_proxies_rss_bytes",
    "after_propagation_rss_bytes",
    "peak_rss_bytes",
)


def _three(summary: dict[str, float]) -> str:
    return f"{ms(summary['p50'])} / {ms(summary['p99'])} / {ms(summary['max'])}"


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def render(record: dict[str, Any]) -> str:
    p, m = record["params"], record["machine"]
    rows: list[list[str]] = []

    def row(figure: str, value: str, how: str = "") -> None:
        rows.append([figure, value, how])

    prop = record.get("propagation")
    if prop:
        med = prop["median_of_rounds"]
        pooled = prop["pooled"]
        n_rounds = len(prop["rounds"])

        def trio(section: str) -> str:
            return " / ".join(ms(med[f"{section}_{stat}"]) for stat in ("p50", "p99", "max"))

        row(
            f"propagation to every proxy p50 / p99 / max ({p['proxies']} proxies)",
            trio("all_proxies"),
            f"per write: the last proxy's apply - t0 (operator API request); median of {n_rounds} rounds "
            f"of {p['writes']} writes",
        )
        row(
            "  pooled over rounds: every proxy p50 / p99 / max",
            _three(pooled["all_proxies"]),
            f"{pooled['all_proxies']['n']} writes; missing: {prop['missing_proxies']} proxy samples, "
            f"{prop['missing_zones']} zone samples",
        )
        row(
            "propagation everywhere p50 / p99 / max",
            trio("everywhere"),
            f"per write: the last of {p['proxies']} proxies and {p['zones'] - p['proxy_zones']} simulated zones",
        )
        row("  per proxy p50 / p99 / max", trio("per_proxy"), "every (write, proxy) sample; median of rounds")
        row("  per simulated zone p50 / p99 / max", trio("per_sim_zone"), "every (write, zone) sample")
        row(
            "zone CP → its proxies p50 / p99 / max",
            trio("zone_cp_hop"),
            f"per write and real zone CP: its last proxy's apply - the zone CP's apply (polled every "
            f"5 ms, so up to ~5 ms late); pooled p99 {ms(pooled['zone_cp_hop']['p99'])}",
        )
        last_round = prop["rounds"][-1]
        for name, by in sorted(last_round["by_zone_cp"].items()):
            row(
                f"  {name}: zone CP applied / its last proxy / hop, p50",
                " / ".join(ms(by[k]["p50"]) for k in ("applied", "last_proxy", "hop")),
                "last round; from t0",
            )
        zone_cpu = ", ".join(
            f"{name} {v:.1f} ms" for name, v in sorted(med["zone_cp_cpu_ms_per_write"].items())
        )
        row(
            "CPU per write: global CP / zone CPs",
            f"{med['global_cpu_ms_per_write']:.1f} ms / {zone_cpu}",
            "utime+stime over a round / writes, median of rounds",
        )
        row(
            "  this benchmark: proxy workers / main process",
            f"{med['workers_cpu_ms_per_write']:.1f} ms / {med['bench_cpu_ms_per_write']:.1f} ms",
            f"the {p['proxy_processes']} workers carry the proxies; the main process the operator, the "
            "simulated zones and the zone CP polling",
        )
    zone_memory = record.get("zone_cp_memory", {})
    for name, mem in sorted(zone_memory.items()):
        if "per_proxy_bytes" not in mem:
            continue
        row(
            f"zone CP memory per connected proxy ({name})",
            kib(mem["per_proxy_marginal_bytes"]),
            f"(RSS with {mem['proxies']} proxies synced - with the first half) / {mem['second_half_proxies']}",
        )
        row(
            "  counting the first burst of snapshots",
            kib(mem["per_proxy_bytes"]),
            f"(RSS with {mem['proxies']} proxies synced - before any) / {mem['proxies']}: an upper bound",
        )
        row(
            "  RSS before proxies / half / all synced / after propagation / peak",
            " / ".join(mib(_num(mem.get(k))) for k in _RSS_KEYS),
        )
    gm = record.get("global_memory", {})
    if "per_zone_bytes" in gm:
        sims = p["zones"] - p["proxy_zones"]
        row(
            "global CP memory per connected zone",
            kib(gm["per_zone_bytes"]),
            f"(RSS with {sims} simulated zones synced - before) / {sims}",
        )
    new_proxy = record.get("full_sync_new_proxy")
    if new_proxy:
        totals = ", ".join(secs(r["total_s"]) for r in new_proxy["runs"])
        last = new_proxy["runs"][-1]
        row(
            f"full sync, new proxy ({last['resources']} documents)",
            secs(new_proxy["median_total_s"]),
            f"median of {len(new_proxy['runs'])} ({totals}); connect → ACK of the snapshot sent",
        )
        row(
            "  of which connect / wait / transfer / check+apply",
            " / ".join(
                secs(last[k]) for k in ("connect_s", "wait_first_frame_s", "transfer_s", "check_and_apply_s")
            ),
            f"last run; {last['parts']} parts, {last['megabytes']} MB",
        )
        row(
            "  CPU per new proxy: zone CP / the proxy (its worker)",
            f"{secs(new_proxy['median_zone_cp_cpu_s'])} / {secs(new_proxy['median_worker_cpu_s'])}",
            "median; the proxy's: decoding, checking every document's version",
        )
    for i, every in enumerate(record.get("full_sync_all_proxies", [])):
        per = every["per_proxy_total_s"]
        cpu = ", ".join(f"{name} {v:.1f} s" for name, v in sorted(every["zone_cp_cpu_s"].items()))
        row(
            f"{'first' if i == 0 else 'second'} half: {every['proxies_connected']} more proxies hold the snapshot",
            secs(every["all_hold_snapshot_s"]),
            f"{every['concurrency']} connecting at a time; per proxy open → ACK p50 {secs(per['p50'])}, "
            f"max {secs(per['max'])}",
        )
        row(
            "  CPU for those: zone CPs / proxy workers",
            f"{cpu} / {every['workers_cpu_s']:.1f} s",
        )
    new_zone = record.get("full_sync_new_zone")
    if new_zone:
        row(
            f"full sync, new simulated zone ({new_zone['runs'][0]['resources']} resources)",
            secs(new_zone["median_total_s"]),
            f"median of {len(new_zone['runs'])}; open → ACK sent (as in the sync scenario)",
        )
    zones = record.get("full_sync_all_zones")
    if zones:
        row(
            f"all {p['zones'] - p['proxy_zones']} simulated zones hold the snapshot",
            secs(zones["all_hold_snapshot_s"]),
        )
    for name, zcp in sorted(record.get("zone_cps", {}).items()):
        row(
            f"real zone CP {name}: start → joined / applied",
            f"{secs(zcp['seconds_to_joined'])} / {secs(zcp['seconds_to_applied'])}",
            f"process start; CPU {zcp['cpu_s']:.2f} s, RSS {mib(zcp['rss_bytes'])} when applied",
        )
    enrollment = record.get("proxy_enrollment")
    if enrollment:
        per = enrollment["per_proxy_s"]
        row(
            f"enrolling {enrollment['proxies']} proxies",
            secs(enrollment["seconds"]),
            f"{enrollment['concurrency']} at a time; per proxy p50 {ms(per['p50'])}, p99 {ms(per['p99'])} "
            "(CA fetched and pinned, key, CSR, certificate; tokens made beforehand)",
        )
    load = record.get("load")
    if load:
        row(f"loading {load['resources']} services through the API", secs(load["seconds"]))
    seen = record.get("proxies_seen")
    if seen:
        row(
            "proxies that applied every measured write",
            f"{seen['proxies_with_every_write']} of {seen['proxies']}",
            f"{seen['writes']} writes; snapshot documents {seen['snapshot_resources']}; failed: "
            f"{len(seen['failed'])}",
        )

    load_end = m.get("loadavg_at_end", "?")
    head = (
        f"## proxies: {p['resources']} resources, {p['zones']} zones ({p['proxy_zones']} real zone CPs), "
        f"{p['proxies']} proxies, {p['writes']} writes x {p['rounds']} rounds\n\n"
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, at end {load_end}, "
        f"Python {m['python']}, commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}; "
        f"{record['started_at']}; this benchmark's CPU over the run {record.get('bench_cpu_s', math.nan):.0f} s\n\n"
        "Aims (issue): propagation p99 under 1 s at 10,000 resources, 20 zones, 1,000 proxies; zone CP "
        "under 100 KB per connected proxy.\n\n"
    )
    out = head + markdown_table(["figure", "value", "how"], rows) + "\n"
    if prop:
        round_rows = [
            [
                str(i + 1),
                _three(r["all_proxies"]),
                f"{ms(r['zone_cp_hop']['p50'])} / {ms(r['zone_cp_hop']['p99'])}",
                ms(r["per_proxy"]["p50"]),
                ms(r["api_reply"]["p50"]),
                f"{r['global_cpu_ms_per_write']:.0f} / "
                + " + ".join(f"{v:.0f}" for _, v in sorted(r["zone_cp_cpu_ms_per_write"].items()))
                + f" / {r['workers_cpu_ms_per_write']:.0f} + {r['bench_cpu_ms_per_write']:.0f} ms",
                f"{r['loadavg_1m'][0]} → {r['loadavg_1m'][1]}",
                f"{r['missing_proxies']} / {r['missing_zones']}",
            ]
            for i, r in enumerate(prop["rounds"])
        ]
        out += (
            "\n### propagation rounds\n\n"
            + markdown_table(
                [
                    "round",
                    "every proxy p50 / p99 / max",
                    "zone CP → proxies p50 / p99",
                    "per proxy p50",
                    "API reply p50",
                    "CPU per write: global / zone CPs / workers + main",
                    "load 1m",
                    "missing proxy / zone samples",
                ],
                round_rows,
            )
            + "\n"
        )
    profiles = record.get("profiles")
    if profiles and "skipped" not in profiles:
        out += "\n### profiles (py-spy, extra phases; their timings are not results)\n"
        for what, prof in profiles.items():
            out += (
                f"\n**{what}** ({prof.get('samples', 0)} samples, {prof.get('file', '')}): top self time\n\n"
            )
            out += (
                markdown_table(
                    ["function", "self %", "samples"],
                    [
                        [e["function"], f"{e['percent']}", str(e["samples"])]
                        for e in prof.get("self", [])[:12]
                    ],
                )
                + "\n"
            )
            out += (
                "\ntop total (on the stack)\n\n"
                + markdown_table(
                    ["function", "total %"],
                    [[e["function"], f"{e['percent']}"] for e in prof.get("total", [])[:15]],
                )
                + "\n"
            )
    return out

"""The ``anycast`` scenario's record as Markdown (the medians, then every round), and the rows
it gives the suite's combined table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.harness import markdown_table

#: (lab scenario, figure key, what it is) in the order of the table; a figure key is one of the
#: scenario's times or one of its watches
FIGURES = (
    ("edge-failure", "action_to_converged_s",
     "edge-eu killed → rtr-eu routes the VIP to the other region (kernel route via rtr-us)"),
    ("edge-failure", "route_gone_rtr_eu_s", "edge-eu killed → its path gone from rtr-eu's BGP table (BIRD)"),
    ("edge-failure", "route_gone_rtr_us_s",
     "edge-eu killed → its path gone at the other region's router (rtr-us, FRR)"),
    ("edge-failure", "restore_to_restored_s", "edge-eu started again → rtr-eu routes to it again"),
    ("edge-drain", "graceful_shutdown_rtr_eu_s", "drain → rtr-eu holds edge-eu's path with 65535:0"),
    ("edge-drain", "action_to_converged_s", "drain → rtr-eu routes the VIP to the other region"),
    ("edge-drain", "withdrawn_rtr_eu_s", "drain → edge-eu's path withdrawn at rtr-eu"),
    ("edge-drain", "restore_to_restored_s", "undrain → rtr-eu routes to edge-eu again"),
    ("zone-failure", "action_to_converged_s",
     "both eu-west workload hosts killed → eu clients served by edge-eu from us-east"),
    ("zone-failure", "restore_to_restored_s", "workload hosts started again → eu clients served from eu-west"),
)  # fmt: skip


def _s(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f} s"


def _figure(entry: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    found = entry.get("times", {}).get(key) or entry.get("watch", {}).get(key)
    return found if found and (found.get("n") or found.get("not_seen")) else None


def _median(figure: Mapping[str, Any]) -> str:
    """The median, or "> X s" when rounds that did not see the change put it there."""
    value = figure["median"]
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return f"> {figure['not_seen_after_s']:.1f} s"
    return _s(value)


def _unseen(figure: Mapping[str, Any]) -> str:
    if not figure.get("not_seen"):
        return ""
    return f"; not seen in {figure['not_seen']} (watched {figure['not_seen_after_s']:.1f} s or more)"


def render(record: Mapping[str, Any]) -> str:
    p, m = record["params"], record["machine"]
    setup, summary = record["setup"], record.get("summary", {})
    load = setup.get("load", {})
    out = (
        f"## anycast: labs/two-region, {p['rounds']} round{'s' if p['rounds'] != 1 else ''} of "
        f"{', '.join(setup['lab_scenarios'])}{' (quick)' if p['quick'] else ''}\n\n"
        f"{m['cpus']} CPUs, load average at start {m['loadavg_at_start']}, at end "
        f"{record.get('loadavg_at_end', 'n/a')}, Python {m['python']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}; {record['started_at']}\n\n"
        f"The lab (15 nodes in network namespaces: BIRD and FRR routers, edges with ExaBGP, zone CPs, "
        f"ingresses, workload hosts) up in {setup.get('up_s', 'n/a')} s. Every scenario runs under the "
        f"ledger load of `scenarios.yml` ({load.get('threads_per_client', '?')} threads from each of "
        f"{', '.join(load.get('clients', []))}, {load.get('seconds', '?')} s, every request tagged and "
        "reconciled against what the workloads received). Times from the action (node killed, `meshgate "
        'edge drain` run); "converged" and "restored" are the scenario\'s own checks (each retried '
        "until it passes: seen by polling); the BGP tables are polled from the action on (`birdc show "
        "route ... all` on rtr-eu, `vtysh show ip bgp ... json` on rtr-us), a time being the end of the "
        "first poll that saw the change. Medians over rounds (min to max).\n\n"
    )
    rows = []
    for name, key, what in FIGURES:
        entry = summary.get(name, {})
        figure = _figure(entry, key)
        if figure is None:
            continue
        extra = ""
        resolution = figure.get("median_resolution_s")
        if resolution is not None and not math.isnan(resolution):
            extra = f"; polled every ~{resolution * 1000:.0f} ms"
        rounds = str(figure["n"] + figure.get("not_seen", 0))
        rows.append(
            [
                name,
                what,
                _median(figure),
                f"{_s(figure['min'])} to {_s(figure['max'])}{extra}{_unseen(figure)}",
                rounds,
            ]
        )
    if rows:
        out += markdown_table(["scenario", "figure", "median", "min to max", "rounds"], rows) + "\n"
    count_rows = []
    for name in setup["lab_scenarios"]:
        entry = summary.get(name)
        if not entry:
            continue
        c, t = entry["counts"], entry["totals"]

        def med(key: str, counts: Mapping[str, Any] = c) -> str:
            value = counts[key]["median"]
            return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:,.0f}"

        count_rows.append([
            name, med("sent"), f"{med('failed')} ({med('failed_before_switch')} / {med('failed_after_switch')})",
            med("lost"), f"{t['sent']:,} / {t['failed']:,} / {t['lost']:,}",
            f"{entry['ledger_held']} of {entry['rounds_ok']}", str(entry["rounds_failed"]),
        ])  # fmt: skip
    if count_rows:
        out += (
            "\nRequests, median per round: sent, failed (on connections opened before / after the route "
            "switch: a connection open to the edge that left is reset when its packets reach another "
            "edge), lost (acknowledged to the client but never received by a workload):\n\n"
            + markdown_table(
                [
                    "scenario",
                    "sent",
                    "failed (before / after switch)",
                    "lost",
                    "all rounds: sent / failed / lost",
                    "ledger held",
                    "rounds failed",
                ],
                count_rows,
            )
            + "\n"
        )
    out += _rounds(record)
    notes = record.get("notes")
    if notes:
        out += "\nNot seen while watched (a time longer than the scenario, not a failure):\n\n" + "".join(
            f"- {n}\n" for n in notes
        )
    problems = record.get("problems")
    if problems:
        out += "\n**Problems seen:**\n\n" + "".join(f"- {p}\n" for p in problems)
    elif problems is not None:
        out += "\nNo problem seen: every scenario met its expectations and the ledger held every time.\n"
    down = record.get("down", {})
    if "seconds" in down:
        out += f"\nThe lab was taken down in {down['seconds']} s.\n"
    return out


def _rounds(record: Mapping[str, Any]) -> str:
    rows = []
    for r in record.get("runs", []):
        if r.get("error"):
            rows.append([str(r["round"]), r["scenario"], "FAILED: " + r["error"][:300], "", "", "", "", ""])
            continue
        watch = ", ".join(
            f"{k.removesuffix('_s')} "
            + (_s(v["s"]) if v.get("s") is not None else f"not seen in {v.get('not_seen_after_s', 0):.1f} s")
            for k, v in sorted(r.get("watch", {}).items())
        )
        served = ", ".join(f"{k} {v:,}" for k, v in sorted(r.get("served_by", {}).items()))
        rows.append([
            str(r["round"]), r["scenario"], _s(r.get("action_to_converged_s")), _s(r.get("restore_to_restored_s")),
            watch or "-", f"{r['sent']:,} / {r['failed']} ({r['failed_before_switch']} / {r['failed_after_switch']}) / {r['lost']}",
            f"{r['ledger']}{'' if r.get('passed') else ' (expectations not met)'}", served,
        ])  # fmt: skip
    if not rows:
        return ""
    return (
        "\n### rounds\n\n"
        + markdown_table(
            [
                "round",
                "scenario",
                "converged",
                "restored",
                "routers",
                "sent / failed (before / after) / lost",
                "ledger",
                "served by (edge/zone)",
            ],
            rows,
        )
        + "\n"
    )


def headline(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The suite's rows: the issue's three times (medians, seconds) and requests failed and lost."""
    wanted = (
        ("edge-failure", "route_gone_rtr_us_s", "anycast: edge killed → its route gone at the other region's router"),
        ("edge-failure", "action_to_converged_s", "anycast: edge killed → its region's router routes to the other region"),
        ("edge-drain", "withdrawn_rtr_eu_s", "anycast: drain → route withdrawn"),
        ("edge-drain", "action_to_converged_s", "anycast: drain → traffic moved (65535:0, before the withdraw)"),
        ("zone-failure", "action_to_converged_s", "anycast: zone failure → served by the next zone"),
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, key, figure in wanted:
        found = _figure(summary.get(name, {}), key)
        value = found["median"] if found else None
        note = ""
        if found and found.get("not_seen"):
            rounds = found["n"] + found["not_seen"]
            note = (
                f"not seen in {found['not_seen']} of {rounds} rounds within {found['not_seen_after_s']:.1f} s"
            )
            if value is not None and math.isinf(value):
                value = None
        rows.append(_row(figure, "s", value, note=note))
    for name in ("edge-failure", "edge-drain", "zone-failure"):
        entry = summary.get(name)
        if not entry or not entry["rounds_ok"]:
            continue
        c = entry["counts"]
        rows.append(
            _row(
                f"anycast: {name}, requests failed per round",
                "requests",
                c["failed"]["median"],
                note=f"of {c['sent']['median']:,.0f} sent; lost {c['lost']['median']:,.0f}",
            )
        )
    return rows


def _row(figure: str, unit: str, value: float | None, note: str = "") -> dict[str, Any]:
    return {"figure": figure, "unit": unit, "meshgate": value, "peer": None, "peer_name": "", "ratio": None,
            "aim": "", "aim_met": None, "note": note}  # fmt: skip

"""The ``latency`` scenario's record as Markdown: per rate, each path's latency, the added latency
of the two proxied paths over direct, whether the rate was reached, and every run."""

from __future__ import annotations

from typing import Any

from bench.harness import markdown_table
from bench.mesh_report import CHAINS_TEXT, machine_line, ms, num

LABELS = {"meshgate": "meshgate", "haproxy": "HAProxy", "direct": "direct (nginx TLS)"}
PATHS = ("meshgate", "haproxy", "direct")


def _signed_ms(seconds: float | None) -> str:
    text = ms(seconds)
    return text if text == "n/a" or text.startswith("-") else "+" + text


def render(record: dict[str, Any]) -> str:
    p, setup = record["params"], record["setup"]
    summary = record.get("summary", {})
    rates = ", ".join(f"{r:,}" for r in p["rates"])
    out = (
        f"## latency: added latency at a fixed rate ({rates} requests/s), mesh path and HAProxy chain vs "
        f"direct ({p['rounds']} rounds x {p['seconds']} s per rate and path, {p['connections']} connections"
        f"{', quick' if p['quick'] else ''})\n\n"
        f"{machine_line(record)}\n\n"
        f"Load: {setup['generator']}: HTTPS keep-alive, `Host`/SNI `{setup['hostname']}`, request i due at "
        f"t0 + i/rate, latency from the due time to the response's last byte (a path that falls behind pays "
        f"for the wait), {setup['warmup_s']:g} s at the rate before each measured run. Paths: the `mesh` "
        f"scenario's two chains and nginx's own TLS port (same certificate, TLS settings as the proxies'). "
        f"{CHAINS_TEXT} Per rate, runs alternate meshgate, HAProxy, direct, …\n\n"
        f"Pinning: {setup['pinning']}.\n\n"
    )
    for rate in p["rates"]:
        entry = summary.get(str(rate))
        if entry is None:
            continue
        paths, added = entry["paths"], entry["added_s"]
        rows = []
        for path in PATHS:
            s = paths[path]
            reached = f"{s['rounds_reached']} / {s['rounds_ok']}"
            rows.append(
                [
                    LABELS[path],
                    num(s["median_achieved_rps"], ",.0f"),
                    reached,
                    *(ms(s[f"median_{q}_s"]) for q in ("p50", "p99", "p999")),
                    *(_signed_ms(added[path][q]) if path in added else "" for q in ("p50", "p99", "p999")),
                    num(s["median_cpu_us_per_request"], ".0f", " µs") if path != "direct" else "",
                    num(s["median_proxies_busy"] * 100, ".0f", " %") if path != "direct" else "",
                    ms(s["median_send_lag_p99_s"]),
                    f"{s['non_2xx_total']} / {s['errors_total']}",
                ]
            )
        out += f"### {rate:,} requests/s\n\n" + markdown_table(
            ["path", "completed/s", "rate kept (runs)", "p50", "p99", "p99.9", "added p50", "added p99",
             "added p99.9", "proxies' CPU/req", "proxies' CPU use", "generator send lag p99",
             "non-2xx / errors"],
            rows,
        )  # fmt: skip
        by_hop = (
            paths["meshgate"]["median_cpu_us_per_request_by_hop"],
            paths["haproxy"]["median_cpu_us_per_request_by_hop"],
        )
        out += (
            "\n\nCPU per request by hop (edge / ingress / local), median: meshgate "
            + " / ".join(num(by_hop[0].get(h), ".0f") for h in ("edge", "ingress", "local"))
            + " µs; HAProxy "
            + " / ".join(num(by_hop[1].get(h), ".0f") for h in ("edge", "ingress", "local"))
            + " µs.\n\n"
        )
        not_reached = [
            LABELS[path] for path in PATHS if paths[path]["rounds_reached"] < paths[path]["rounds_ok"]
        ]
        if not_reached:
            out += (
                f"**Rate not kept** by {', '.join(not_reached)} in some or all runs: fewer than 99 % "
                "of the scheduled requests completed without error within the run (plus 3 s), or "
                "requests queued in the generator (send lag p99 of 100 ms or more), so the latency "
                "shown is mostly that queue. Completed/s is what the path did.\n\n"
            )
    aim = summary.get("aim")
    if aim is not None:
        verdict = "met" if aim["met"] else "missed"
        why = "" if aim["rate_reached"] else " (the rate was not kept)"
        out += (
            f"Aim (issue 9): added p99 on the mesh path at {aim['rate']:,} requests/s under "
            f"{aim['limit_s'] * 1e3:g} ms: **{verdict}** ({_signed_ms(aim['added_p99_s'])}{why}). A benchmark, "
            "not a test: nothing fails on it.\n\n"
        )
    out += (
        "Added latency: a path's median over runs less direct's, per percentile (the generator's own delay, "
        "the client's TLS and nginx are in both and cancel out). The generator's send lag (when a request left "
        "less when it was due) shows whether the generator kept up: it runs on the load's CPU with nginx, so a "
        "large lag on the direct path means that CPU was short (another tenant), and every path's figures "
        "include it. Proxies' CPU per request: the path's proxy processes' utime+stime (/proc/<pid>/stat) over "
        "the run (warm-up included) per request sent.\n"
    )
    found = record.get("problems")
    if found:
        out += "\n**Problems seen:**\n\n" + "".join(f"- {x}\n" for x in found)
    elif found is not None:
        out += "\nNo problem seen: every completed request answered 2xx, no connection error.\n"
    return out + _runs(record)


def _runs(record: dict[str, Any]) -> str:
    rows = []
    for r in record.get("runs", []):
        head = [f"{r['rate']:,}", str(r["round"]), LABELS[r["path"]]]
        if r.get("error"):
            rows.append([*head, "FAILED: " + r["error"], *[""] * 7])
            continue
        lat, lag = r["latency_s"], r["send_lag_s"]
        rows.append(
            [
                *head,
                num(r["achieved_rps"], ",.0f"),
                ms(lat["p50"]),
                ms(lat["p99"]),
                ms(lat["p999"]),
                ms(lat["max"]),
                ms(lag["p99"]),
                num(r["cpu_us_per_request"], ".0f") if r["path"] != "direct" else "",
                "yes" if r["reached"] else "no",
                ", ".join(f"{k} {v}" for k, v in {**r["statuses"], **r["errors"]}.items()),
            ]
        )
    if not rows:
        return ""
    headers = ["rate", "round", "path", "completed/s", "p50", "p99", "p99.9", "max", "send lag p99",
               "CPU µs/req", "reached", "statuses, errors"]  # fmt: skip
    return "\n### runs\n\n" + markdown_table(headers, rows) + "\n"

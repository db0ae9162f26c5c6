"""``python -m bench [SCENARIO] [options]``: run a benchmark against real meshgate processes. With
no scenario (or ``all``), the suite: every scenario of ``SUITE`` in turn, one combined result.

Run from the repository root (the scenarios reuse ``tests.support``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

#: What the suite (``python -m bench``, ``python -m bench all``) runs, in this order, and whether a
#: scenario needs root (skipped with a note otherwise). A new scenario is one line here.
SUITE: tuple[tuple[str, bool], ...] = (
    ("sync", False),
    ("proxies", False),
    ("http", False),
    ("l4", False),
    ("mesh", False),
    ("latency", False),
    ("memory", False),
    ("anycast", True),
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    from bench.suite import add_suite_arguments

    add_suite_arguments(top)  # without a scenario: the suite
    scenarios = top.add_subparsers(dest="scenario")
    sync = scenarios.add_parser(
        "sync",
        help="control path: full sync, propagation latency, memory per zone",
        description="A real global CP on SQLite with N services; Z simulated zones speaking the real "
        "protocol; one real zone CP. Results go to bench/results/.",
    )
    sync.add_argument("--quick", action="store_true", help="smoke run: 1,000 resources, 5 zones, 50 writes")
    sync.add_argument("--zones", type=_positive, help="simulated zones (default 20)")
    sync.add_argument("--resources", type=_positive, help="Service resources (default 10,000)")
    sync.add_argument("--writes", type=_positive, help="writes per propagation round (default 200)")
    sync.add_argument("--rounds", type=_positive, help="propagation rounds (default 3)")
    sync.add_argument("--full-sync-repeats", type=_positive, help="full syncs of the first zone (default 3)")
    sync.add_argument(
        "--real-zone-writes", type=int, help="writes timed to the real zone CP (default 30; 0: none)"
    )
    sync.add_argument("--no-real-zone", action="store_true", help="skip the real zone CP's full sync")
    sync.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile extra phases with py-spy (global CP, zone CP); not timed",
    )
    sync.add_argument("--keep", action="store_true", help="keep the temporary data dirs and logs")
    sync.add_argument("--results-dir", help="write the results there instead of bench/results/")
    l4 = scenarios.add_parser(
        "l4",
        help="data path: mTLS L4 relay chain throughput against HAProxy doing the same hops",
        description="client -> A (mTLS out) -> zone ingress (SNI passthrough) -> B (mTLS in) -> "
        "workload, once with three meshgate proxy processes and once with three HAProxy processes; "
        "iperf3 rounds alternate between them. Results go to bench/results/.",
    )
    l4.add_argument("--quick", action="store_true", help="smoke run: 1 round per chain of 3 s")
    l4.add_argument("--rounds", type=_positive, help="rounds per chain (default 5)")
    l4.add_argument("--seconds", type=_positive, help="length of each iperf3 test (default 10)")
    l4.add_argument("--streams", type=_positive, help="parallel iperf3 streams (default 1)")
    l4.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin processes (default: load on the first CPU, the proxies on the others)",
    )
    l4.add_argument("--keep", action="store_true", help="keep the temporary directory (PKI, configs, logs)")
    l4.add_argument("--results-dir", help="write the results there instead of bench/results/")
    http = scenarios.add_parser(
        "http",
        help="data path: one HTTP/1.1 proxy hop's requests/s, latency and CPU per request against "
        "HAProxy and nginx",
        description="wrk -> proxy -> nginx, the proxy being the meshgate HTTP engine (the local "
        "proxy's inbound path without TLS), HAProxy (mode http, nbthread 1) or nginx (one process, "
        "proxy_pass with an upstream keep-alive pool), each logging every request; wrk rounds "
        "alternate between them. Results go to bench/results/.",
    )
    http.add_argument("--quick", action="store_true", help="smoke run: 1 round per proxy of 3 s")
    http.add_argument("--rounds", type=_positive, help="rounds per proxy (default 5)")
    http.add_argument("--seconds", type=_positive, help="length of each wrk run (default 10)")
    http.add_argument("--connections", type=_positive, help="wrk's keep-alive connections (default 50)")
    http.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin processes (default: wrk and nginx on the first CPU, the proxies on the others)",
    )
    http.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, two extra meshgate rounds under py-spy (speedscope, collapsed stacks); not results",
    )
    http.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    http.add_argument("--results-dir", help="write the results there instead of bench/results/")
    mesh = scenarios.add_parser(
        "mesh",
        help="data path: the mesh path (HTTPS edge -> zone ingress -> mTLS local proxy) against a HAProxy chain",
        description="wrk (HTTPS) -> edge -> zone ingress (SNI passthrough) -> local proxy (mTLS) -> nginx, once "
        "through real meshgate processes configured by a global CP and a zone CP, once through three HAProxy "
        "processes doing the same TLS hops; wrk rounds alternate between them. Results go to bench/results/.",
    )
    mesh.add_argument("--quick", action="store_true", help="smoke run: 1 round per chain of 3 s")
    mesh.add_argument("--rounds", type=_positive, help="rounds per chain (default 5)")
    mesh.add_argument("--seconds", type=_positive, help="length of each wrk run (default 10)")
    mesh.add_argument("--connections", type=_positive, help="wrk's keep-alive connections (default 50)")
    mesh.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin processes (default: wrk, nginx and the CPs on the first CPU, the proxies on the others)",
    )
    mesh.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one extra meshgate round with py-spy on each hop (collapsed stacks); not results",
    )
    mesh.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    mesh.add_argument("--results-dir", help="write the results there instead of bench/results/")
    latency = scenarios.add_parser(
        "latency",
        help="data path: added latency at a fixed rate on the mesh path and the HAProxy chain, against direct",
        description="An open-loop generator (latency from each request's due time) at fixed rates through the "
        "mesh scenario's two chains and directly to nginx over TLS; runs alternate between the three paths. "
        "Results go to bench/results/.",
    )
    latency.add_argument("--quick", action="store_true", help="smoke run: 500 and 1,000/s, 1 round of 1 s")
    latency.add_argument(
        "--rates", type=_rates, help="requests per second, comma-separated (default 2000,10000)"
    )
    latency.add_argument("--rounds", type=_positive, help="rounds per rate and path (default 3)")
    latency.add_argument("--seconds", type=_positive, help="measured seconds per run (default 10)")
    latency.add_argument(
        "--connections", type=_positive, help="the generator's keep-alive connections (default 50)"
    )
    latency.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin processes (default: the generator, nginx and the CPs on the first CPU, the proxies on others)",
    )
    latency.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    latency.add_argument("--results-dir", help="write the results there instead of bench/results/")
    add_proxies_parser(scenarios)
    add_memory_parser(scenarios)
    add_anycast_parser(scenarios)
    suite = scenarios.add_parser(
        "all", help="the suite: every scenario in turn (as with no scenario)", description=SUITE_HELP
    )
    add_suite_arguments(suite)
    return top


def add_proxies_parser(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxies = scenarios.add_parser(
        "proxies",
        help="control path to proxies: global write -> every proxy in every zone, memory per proxy",
        description="A real global CP on SQLite with N services; Z zones, R of them real zone CPs carrying P "
        "simulated proxies that speak the real proxy protocol (enrollment, mTLS config stream, ACK), the "
        "others simulated zones. Results go to bench/results/.",
    )
    proxies.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 resources, 4 zones, 50 proxies, 20 writes"
    )
    proxies.add_argument("--zones", type=_positive, help="zones in all, the real ones included (default 20)")
    proxies.add_argument(
        "--proxy-zones", type=_positive, help="real zone CPs carrying the proxies (default 2)"
    )
    proxies.add_argument("--proxies", type=_positive, help="simulated proxies (default 1,000)")
    proxies.add_argument("--resources", type=_positive, help="Service resources (default 10,000)")
    proxies.add_argument("--writes", type=_positive, help="writes per propagation round (default 100)")
    proxies.add_argument("--rounds", type=_positive, help="propagation rounds (default 3)")
    proxies.add_argument(
        "--full-sync-repeats", type=_positive, help="full syncs of the first zone and first proxy (default 3)"
    )
    proxies.add_argument(
        "--connect-concurrency",
        type=_positive,
        help="proxies taking their first snapshot at once, in all (default 10)",
    )
    proxies.add_argument(
        "--proxy-processes", type=_positive, help="worker processes carrying the proxies (default 2)"
    )
    proxies.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile a zone CP and this benchmark with py-spy in extra phases; not timed",
    )
    proxies.add_argument("--keep", action="store_true", help="keep the temporary data dirs and logs")
    proxies.add_argument("--results-dir", help="write the results there instead of bench/results/")


def run_proxies(args: argparse.Namespace) -> int:
    """``python -m bench proxies``: 1 if a proxy or zone missed a write."""
    from bench import proxies_control

    base = proxies_control.Params()
    quick = proxies_control.Params.quick_defaults() if args.quick else {}

    def choose(name: str, given: int | None) -> int:
        return given if given is not None else quick.get(name, int(getattr(base, name)))

    params = proxies_control.Params(
        zones=choose("zones", args.zones),
        proxy_zones=choose("proxy_zones", args.proxy_zones),
        proxies=choose("proxies", args.proxies),
        resources=choose("resources", args.resources),
        writes=choose("writes", args.writes),
        rounds=choose("rounds", args.rounds),
        full_sync_repeats=choose("full_sync_repeats", args.full_sync_repeats),
        connect_concurrency=choose("connect_concurrency", args.connect_concurrency),
        proxy_processes=choose("proxy_processes", args.proxy_processes),
        profile=args.profile,
        keep=args.keep,
        quick=args.quick,
        results_dir=args.results_dir,
    )
    problems = params.problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    record = proxies_control.run(params)
    propagation = record["propagation"]
    return 1 if propagation["missing_proxies"] or propagation["missing_zones"] else 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the suite's options written before a scenario's name applied to it."""
    top = parser()
    args = top.parse_args(argv)
    if args.scenario not in (None, "all"):
        # the suite's options given before a scenario's name: --quick and --results-dir mean the
        # same for one scenario; --only, --skip and --reuse choose scenarios, which a name did
        if args.suite_only or args.suite_skip or args.suite_reuse:
            top.error(f"--only, --skip and --reuse are for the suite, not with a scenario ({args.scenario})")
        if args.suite_quick:
            args.quick = True
        if args.suite_results_dir and not args.results_dir:
            args.results_dir = args.suite_results_dir
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.scenario == "sync":
        import uvloop

        from bench.sync_propagation import Params, run

        base = Params()
        quick = Params.quick_defaults() if args.quick else {}

        def choose(name: str, given: int | None) -> int:
            return given if given is not None else quick.get(name, int(getattr(base, name)))

        params = Params(
            zones=choose("zones", args.zones),
            resources=choose("resources", args.resources),
            writes=choose("writes", args.writes),
            rounds=choose("rounds", args.rounds),
            full_sync_repeats=choose("full_sync_repeats", args.full_sync_repeats),
            real_zone_writes=choose("real_zone_writes", args.real_zone_writes),
            real_zone=not args.no_real_zone,
            profile=args.profile,
            keep=args.keep,
            quick=args.quick,
        )
        if (params.rounds + params.profile) * params.writes + 2 * params.real_zone_writes > 65_535 - 20_000:
            print("too many writes: each needs a port number of its own", file=sys.stderr)
            return 2
        from bench.suite import results_into

        with results_into(args.results_dir):
            uvloop.run(run(params))
        return 0
    if args.scenario == "l4":
        from bench import l4_chain

        base4 = l4_chain.Params()
        quick4 = l4_chain.Params.quick_defaults() if args.quick else {}

        def choose4(name: str, given: int | None) -> int:
            return given if given is not None else quick4.get(name, int(getattr(base4, name)))

        l4_params = l4_chain.Params(
            seconds=choose4("seconds", args.seconds),
            rounds=choose4("rounds", args.rounds),
            streams=choose4("streams", args.streams),
            pin=not args.no_pin,
            keep=args.keep,
            quick=args.quick,
        )
        from bench.suite import results_into

        with results_into(args.results_dir):
            record = l4_chain.run(l4_params)
        failed = sum(record["summary"][name]["rounds_failed"] for name in l4_chain.CHAINS)
        return 1 if failed else 0
    if args.scenario == "http":
        from bench import http_hop

        base_h = http_hop.Params()
        quick_h = http_hop.Params.quick_defaults() if args.quick else {}

        def choose_h(name: str, given: int | None) -> int:
            return given if given is not None else quick_h.get(name, int(getattr(base_h, name)))

        http_params = http_hop.Params(
            seconds=choose_h("seconds", args.seconds),
            rounds=choose_h("rounds", args.rounds),
            connections=choose_h("connections", args.connections),
            pin=not args.no_pin,
            profile=args.profile,
            keep=args.keep,
            quick=args.quick,
            results_dir=args.results_dir,
        )
        record_h = http_hop.run(http_params)
        return 1 if record_h["problems"] else 0
    if args.scenario == "mesh":
        return mesh(args)
    if args.scenario == "latency":
        return latency(args)
    if args.scenario == "proxies":
        return run_proxies(args)
    if args.scenario == "memory":
        return run_memory(args)
    if args.scenario == "anycast":
        return run_anycast(args)
    if args.scenario in (None, "all"):
        from bench.suite import run_suite

        return run_suite(args, SUITE, main)
    return 2


def mesh(args: argparse.Namespace) -> int:
    """``python -m bench mesh``: the mesh path against the HAProxy chain; 1 if anything failed."""
    from bench import mesh_path

    base, quick = mesh_path.Params(), mesh_path.Params.quick_defaults() if args.quick else {}

    def choose(name: str, given: int | None) -> int:
        return given if given is not None else quick.get(name, int(getattr(base, name)))

    params = mesh_path.Params(
        seconds=choose("seconds", args.seconds),
        rounds=choose("rounds", args.rounds),
        connections=choose("connections", args.connections),
        pin=not args.no_pin,
        profile=args.profile,
        keep=args.keep,
        quick=args.quick,
        results_dir=args.results_dir,
    )
    record = mesh_path.run(params)
    return 1 if record["problems"] else 0


def _rates(text: str) -> tuple[int, ...]:
    rates = tuple(int(part) for part in text.split(",") if part.strip())
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError("must be positive integers, comma-separated")
    return rates


def latency(args: argparse.Namespace) -> int:
    """``python -m bench latency``: added latency at fixed rates; 1 if anything failed."""
    from bench import latency_rate

    base, quick = latency_rate.Params(), latency_rate.Params.quick_defaults() if args.quick else {}

    def choose(name: str, given: Any) -> Any:
        return given if given is not None else quick.get(name, getattr(base, name))

    params = latency_rate.Params(
        rates=choose("rates", args.rates),
        seconds=choose("seconds", args.seconds),
        rounds=choose("rounds", args.rounds),
        connections=choose("connections", args.connections),
        pin=not args.no_pin,
        keep=args.keep,
        quick=args.quick,
        results_dir=args.results_dir,
    )
    record = latency_rate.run(params)
    return 1 if record["problems"] else 0


SUITE_HELP = (
    "Every scenario of the suite in turn (anycast only as root), each with --quick if given; a scenario "
    "that fails is reported and the suite goes on (exit status 1 at the end). Writes bench/results/<UTC "
    "time>.json and .md: each scenario's headline figures, ratios to its peer and the issue's aims, "
    "parameters, machine and commit; each scenario's own results beside them."
)


def add_memory_parser(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    memory = scenarios.add_parser(
        "memory",
        help="memory: idle RSS of a local proxy and an edge, RSS per 1,000 idle connections, against HAProxy and nginx",
        description="A real global CP and zone CP; a fresh `meshgate proxy run --role local`, `meshgate edge run`, "
        "HAProxy and nginx process per measurement: idle RSS, then N idle keep-alive connections (plain HTTP, "
        "mTLS, HTTPS) held by a separate client process. Results go to bench/results/.",
    )
    memory.add_argument("--quick", action="store_true", help="smoke run: 1 round of 200 connections")
    memory.add_argument(
        "--connections", type=_positive, help="idle connections per measurement (default 1,000)"
    )
    memory.add_argument("--rounds", type=_positive, help="rounds (default 3)")
    memory.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    memory.add_argument("--results-dir", help="write the results there instead of bench/results/")


def run_memory(args: argparse.Namespace) -> int:
    """``python -m bench memory``: 1 if a measurement failed or a connection was lost."""
    from bench import memory_run

    base, quick = memory_run.Params(), memory_run.Params.quick_defaults() if args.quick else {}

    def choose(name: str, given: int | None) -> int:
        return given if given is not None else quick.get(name, int(getattr(base, name)))

    params = memory_run.Params(
        connections=choose("connections", args.connections),
        rounds=choose("rounds", args.rounds),
        keep=args.keep,
        quick=args.quick,
        results_dir=args.results_dir,
    )
    record = memory_run.run(params)
    return 1 if record["problems"] else 0


def add_anycast_parser(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    anycast = scenarios.add_parser(
        "anycast",
        help="anycast (root): edge kill to route gone, drain to withdraw, zone failure to next zone, requests lost",
        description="Brings labs/two-region up (network namespaces, BIRD, FRR, ExaBGP), runs its edge-failure, "
        "edge-drain and zone-failure scenarios under load in rounds, and always takes the lab down. Needs "
        "root. Results go to bench/results/.",
    )
    anycast.add_argument("--quick", action="store_true", help="smoke run: 1 round of each scenario")
    anycast.add_argument("--rounds", type=_positive, help="rounds of the three scenarios (default 3)")
    anycast.add_argument("--keep", action="store_true", help="keep the lab's temporary copy and its logs")
    anycast.add_argument("--results-dir", help="write the results there instead of bench/results/")


def run_anycast(args: argparse.Namespace) -> int:
    """``python -m bench anycast``: 2 without root; 1 if a scenario failed or did not hold."""
    import os

    if os.geteuid() != 0:
        print("python -m bench anycast needs root (network namespaces): run it as root", file=sys.stderr)
        return 2
    from bench import anycast_run

    base = anycast_run.Params()
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else base.rounds)
    params = anycast_run.Params(rounds=rounds, keep=args.keep, quick=args.quick, results_dir=args.results_dir)
    record = anycast_run.run(params)
    return 1 if record["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

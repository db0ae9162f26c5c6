"""``python -m bench SCENARIO [options]``: run a benchmark against real meshgate processes.

Run from the repository root (the scenarios reuse ``tests.support``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    scenarios = top.add_subparsers(dest="scenario", required=True)
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
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        uvloop.run(run(params))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

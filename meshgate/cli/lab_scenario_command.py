"""``meshgate lab scenario DIR [NAME...] [--pin] [-o json]``: failure scenarios under client load.

Runs each named scenario of ``DIR/scenarios.yml`` (all of them when none is named; ``--list``
shows them) against the running lab and prints its figures: convergence, failed requests split
at the route switch, the ledger's verdict, who served the clients. Exit status 0 when every
scenario met its expectations, 1 when one did not, 3 for an invalid scenarios file, 7 when the
lab is not running.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from meshgate.cli.exits import Exit

SCENARIOS_FILE = "scenarios.yml"


def _summary(figures: dict[str, Any]) -> str:
    parts = []
    if "action_to_converged_s" in figures:
        parts.append(f"converged {figures['action_to_converged_s']:.2f}s")
    if "restore_to_restored_s" in figures:
        parts.append(f"restored {figures['restore_to_restored_s']:.2f}s")
    parts.append(f"{figures['sent']} requests, {figures['failed']} failed")
    if figures["failed"]:
        parts.append(
            f"({figures['failed_before_switch']} on connections opened before the switch, "
            f"{figures['failed_after_switch']} after; {figures['failures']})"
        )
    parts.append(f"ledger {figures['ledger']}")
    if figures["retried"]:
        parts.append(f"{figures['retried']} retried by the mesh")
    served = ", ".join(f"{k} {v}" for k, v in sorted(figures["served_by"].items()))
    return "; ".join(parts) + f"; served by {served}"


@click.command("scenario")
@click.argument("lab_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--pin", is_flag=True, help="Pin established flows on the scenario file's pin router first.")
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def scenario(lab_dir: Path, names: tuple[str, ...], pin: bool, list_only: bool, output: str) -> None:
    """Run failure scenarios of DIR/scenarios.yml under client load and print their figures."""
    from meshgate.cli.lab_check_command import find_lab
    from meshgate.lab.check_run import CheckFailed, wait_for_check
    from meshgate.lab.scenario_run import ScenarioFailed, run_scenario
    from meshgate.lab.scenarios import ScenariosError, load_scenarios

    path = lab_dir / SCENARIOS_FILE
    try:
        scenarios = load_scenarios(path.read_text())
    except OSError as exc:
        click.echo(f"{path}: {exc.strerror or exc}", err=True)
        raise SystemExit(Exit.NOT_FOUND) from None
    except ScenariosError as exc:
        for violation in exc.violations:
            click.echo(f"{path}: {violation}", err=True)
        raise SystemExit(Exit.INVALID) from None
    if list_only:
        for name, item in scenarios.scenarios.items():
            click.echo(f"{name}: {item.about}")
        return
    unknown = [n for n in names if n not in scenarios.scenarios]
    if unknown:
        listed = ", ".join(scenarios.scenarios)
        click.echo(f"{path}: no scenario {', '.join(unknown)} (scenarios: {listed})", err=True)
        raise SystemExit(Exit.NOT_FOUND)
    lab: Any = find_lab(lab_dir)
    results = []
    failed = False
    for name in names or tuple(scenarios.scenarios):
        try:
            outcome = run_scenario(
                lab, scenarios, name, run_check=wait_for_check, pinned=pin,
                say=lambda line: click.echo(line, err=True),
            )  # fmt: skip
        except (ScenarioFailed, CheckFailed) as exc:
            failed = True
            results.append({"scenario": name, "pinned": pin, "passed": False, "error": str(exc)})
            click.echo(f"FAIL {name}: {exc}", err=output == "json")
            continue
        failed = failed or not outcome.passed
        results.append({"scenario": name, "pinned": pin, "passed": outcome.passed,
                        "problems": outcome.problems, **outcome.figures})  # fmt: skip
        if output == "text":
            verdict = "pass" if outcome.passed else "FAIL"
            click.echo(f"{verdict} {name}{' (pinned)' if pin else ''}: {_summary(outcome.figures)}")
            for problem in outcome.problems:
                click.echo(f"  - {problem}")
    if output == "json":
        click.echo(json.dumps(results, indent=2))
    if failed:
        raise SystemExit(Exit.ERROR)

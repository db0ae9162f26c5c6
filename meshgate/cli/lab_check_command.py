"""``meshgate lab check DIR [--only NAME] [-o json]``: run a running lab's ``DIR/checks.yml``.

Checks run in file order, each retried until it passes or its deadline passes; the exit status
is 0 only if every check passed (1 if one failed, 3 for a checks file that is not valid, 7 when
the lab is not running).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from meshgate.cli.exits import Exit
from meshgate.lab.check_run import (
    CheckResult,
    describe_time,
    render_json,
    render_table,
    run_checks,
    select,
)
from meshgate.lab.checks import Check, ChecksError, load_checks, unknown_nodes
from meshgate.lab.nodes_protocol import LabNodes

CHECKS_FILE = "checks.yml"


def find_lab(lab_dir: Path) -> LabNodes:
    """The lab running from ``lab_dir``; exits 7 (with the runner's message) when there is none."""
    from meshgate.lab.errors import LabError
    from meshgate.lab.running import RunningLab  # type: ignore[import-not-found,unused-ignore]

    try:
        lab: LabNodes = RunningLab.find(lab_dir)
    except (LabError, OSError) as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(Exit.NOT_FOUND) from None
    return lab


def read_checks(path: Path, only: Sequence[str] = ()) -> list[Check]:
    """The checks of ``path`` (the ``--only`` ones); ChecksError naming the file otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ChecksError([f"{path}: {exc.strerror or exc}"]) from None
    try:
        return select(load_checks(text), only)
    except ChecksError as exc:
        raise ChecksError([f"{path}: {violation}" for violation in exc.violations]) from None


def check_lab(
    lab: LabNodes,
    checks: Sequence[Check],
    output: str,
    echo: Callable[[str], None] = click.echo,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run ``checks`` against ``lab`` and print the results; the exit status."""
    violations = unknown_nodes(list(checks), lab.nodes)
    if violations:
        for violation in violations:
            echo(violation)
        return Exit.INVALID

    def report(result: CheckResult) -> None:
        if progress is not None:
            mark = "pass" if result.passed else "FAIL"
            progress(f"{mark}  {result.check.name} ({describe_time(result)})")

    results = run_checks(lab, checks, on_result=report)
    echo(render_json(results) if output == "json" else render_table(results))
    return Exit.OK if all(result.passed for result in results) else Exit.ERROR


@click.command("check")
@click.argument("lab_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--only", multiple=True, metavar="NAME", help="Run only the check NAME (repeatable).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def check(lab_dir: Path, only: tuple[str, ...], output: str) -> None:
    """Run the running lab's checks (DIR/checks.yml), each until it passes or its deadline
    passes; exit 0 only if all pass."""
    try:
        checks = read_checks(lab_dir / CHECKS_FILE, only)
    except ChecksError as exc:
        for violation in exc.violations:
            click.echo(violation, err=True)
        raise SystemExit(Exit.INVALID) from None
    lab = find_lab(lab_dir)
    progress = None if output == "json" else (lambda line: click.echo(line, err=True))
    raise SystemExit(check_lab(lab, checks, output, progress=progress))

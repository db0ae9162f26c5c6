"""``meshgate``: one command line for every component and every operator task."""

from __future__ import annotations

import click

from meshgate import __version__
from meshgate.cli.demo_command import demo
from meshgate.cli.global_cp_commands import global_cp
from meshgate.cli.resource_commands import apply, delete, describe, get
from meshgate.cli.token_commands import token
from meshgate.cli.zone_cp_commands import zone_cp


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshgate")
def cli() -> None:
    """meshgate: multi-region anycast mesh gateway."""


for command in (apply, get, delete, describe, token, global_cp, zone_cp, demo):
    cli.add_command(command)


def main() -> None:
    cli()

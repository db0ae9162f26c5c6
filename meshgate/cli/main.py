"""``meshgate``: one command line for every component and every operator task.

Subcommands are imported only when used: ``meshgate proxy run`` must not load the control
plane's web framework or validation stack, and every command starts faster for it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from meshgate import __version__

COMMANDS = {
    "apply": (
        "meshgate.cli.resource_commands",
        "apply",
        "Create or update every resource in the files, all or nothing.",
    ),
    "get": ("meshgate.cli.resource_commands", "get", "Show resources of a kind, or one by name."),
    "delete": (
        "meshgate.cli.resource_commands",
        "delete",
        "Delete one resource (refused while others reference it).",
    ),
    "describe": (
        "meshgate.cli.resource_commands",
        "describe",
        "Show one resource and its references both ways.",
    ),
    "token": ("meshgate.cli.token_commands", "token", "Join tokens for zones, edges, ingresses and proxies."),
    "global-cp": ("meshgate.cli.global_cp_commands", "global_cp", "The global control plane."),
    "zone-cp": ("meshgate.cli.zone_cp_commands", "zone_cp", "The zone control plane of one region."),
    "proxy": ("meshgate.cli.proxy_commands", "proxy", "Local proxies and zone ingresses."),
    "edge": (
        "meshgate.cli.edge_commands",
        "edge",
        "Anycast edges: run one, drain or undrain it, show what it reports.",
    ),
    "demo": (
        "meshgate.cli.demo_command",
        "demo",
        "Run a whole two-region mesh on this machine: control planes, proxies, workloads, edges.",
    ),
    "lab": (
        "meshgate.cli.lab_commands",
        "lab",
        "containerlab topologies on network namespaces: up, check, status, exec, trace, scenario, down.",
    ),
    "workload": (
        "meshgate.cli.workload_command",
        "workload",
        "A sample HTTP workload (for the demo and labs) that records tagged requests.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _help = COMMANDS[name]
        command: Any = getattr(importlib.import_module(module), attribute)
        return command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_m, _a, text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshgate")
def cli() -> None:
    """meshgate: multi-region anycast mesh gateway."""


def main() -> None:
    cli()

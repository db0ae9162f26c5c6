"""``meshgate token create``."""

from __future__ import annotations

from typing import Any

import click

from meshgate.cli.common import connection_options, handle_errors, make_client
from meshgate.cli.output import to_json


@click.group()
def token() -> None:
    """Join tokens for zones, edges, ingresses and proxies."""


@token.command()
@click.option("--role", type=click.Choice(["zone", "edge", "ingress", "proxy"]), required=True)
@click.option("--zone", required=True, help="Zone the newcomer joins.")
@click.option("--ttl", default="24h", show_default=True, help="Validity, e.g. 15m, 24h, 720h.")
@click.option("--reusable", is_flag=True, help="Allow more than one enrollment with it.")
@click.option("--mesh", default="default", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["token", "json"]),
    default="token",
    help="token: the token alone (for scripts); json: with its claims.",
)
@connection_options
@handle_errors
def create(role: str, zone: str, ttl: str, reusable: bool, mesh: str, output: str, **kwargs: Any) -> None:
    """Create a join token signed by the global CP."""
    client = make_client(kwargs)
    body = {"role": role, "zone": zone, "ttl": ttl, "reusable": reusable, "mesh": mesh}
    result = client.request("POST", "/api/v1/tokens", json_body=body)
    click.echo(result["token"] if output == "token" else to_json(result))

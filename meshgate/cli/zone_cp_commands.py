"""``meshgate zone-cp run``."""

from __future__ import annotations

from pathlib import Path

import click

from meshgate.cli.ca_pin import ca_fingerprint_option, check_token
from meshgate.cli.exits import Exit


@click.group(name="zone-cp")
def zone_cp() -> None:
    """The zone control plane of one region."""


@zone_cp.command()
@click.option("--zone", required=True, help="The zone this CP runs (defined at the global CP).")
@click.option(
    "--global",
    "global_url",
    required=True,
    help="The global CP's zone-facing URL, e.g. https://global.example:5685",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="Zone join token (meshgate token create --role zone); needed on the first start.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Identity and last good state; the zone serves from it while the global CP is away.",
)
@click.option(
    "--listen", default=None, help="HOST:PORT of the zone API [default 127.0.0.1:5681]; 0 picks one."
)
@click.option(
    "--address-file", type=click.Path(path_type=Path), help="Write the API URL here once listening."
)
@click.option(
    "--proxy-listen",
    default=None,
    help="HOST:PORT where proxies enroll and get config (TLS) [default 127.0.0.1:5682]; 0 picks one.",
)
@click.option(
    "--proxy-address-file", type=click.Path(path_type=Path), help="Write the proxy-facing address here."
)
@ca_fingerprint_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(
    zone: str,
    global_url: str,
    token_file: Path | None,
    data_dir: Path,
    listen: str | None,
    address_file: Path | None,
    proxy_listen: str | None,
    proxy_address_file: Path | None,
    ca_fingerprint: str | None,
    log_level: str,
) -> None:
    """Run the zone CP until SIGTERM or SIGINT."""
    check_token(token_file, ca_fingerprint)
    import uvloop

    from meshgate.mmap_threshold import fix_mmap_threshold
    from meshgate.telemetry import logs
    from zone_cp.config import DEFAULT_LISTEN, DEFAULT_PROXY_LISTEN, ZoneCPConfig
    from zone_cp.server import run as serve

    logs.configure("zone-cp", log_level)
    config = ZoneCPConfig(
        zone=zone,
        global_url=global_url,
        token_file=token_file,
        data_dir=data_dir,
        listen=listen or DEFAULT_LISTEN,
        address_file=address_file,
        proxy_listen=proxy_listen or DEFAULT_PROXY_LISTEN,
        proxy_address_file=proxy_address_file,
    )
    fix_mmap_threshold()  # each proxy's TLS read buffer (256 KiB) costs one page, not 256 KiB
    try:
        code = uvloop.run(serve(config))
    except Exception as exc:
        click.echo(f"error: zone CP failed: {exc}", err=True)
        raise SystemExit(int(Exit.ERROR)) from None
    raise SystemExit(code)

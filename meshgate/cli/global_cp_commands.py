"""``meshgate global-cp run``."""

from __future__ import annotations

from pathlib import Path

import click

from meshgate.cli.exits import Exit


@click.group(name="global-cp")
def global_cp() -> None:
    """The global control plane."""


@global_cp.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="State directory [default ~/.local/share/meshgate/global-cp].",
)
@click.option(
    "--store",
    "store_url",
    help="sqlite:PATH (default <data-dir>/store.db) or etcd://HOST:PORT,HOST:PORT[/PREFIX]",
)
@click.option(
    "--listen", default=None, help="HOST:PORT for the API [default 127.0.0.1:5680]; port 0 picks one."
)
@click.option(
    "--kek-file",
    type=click.Path(path_type=Path),
    help="Key-encryption key shared by replicas [default <data-dir>/kek; made if absent].",
)
@click.option(
    "--admin-token-file",
    type=click.Path(path_type=Path),
    help="Where the first start writes the admin token [default <data-dir>/admin-token].",
)
@click.option("--trust-domain", default=None, help="Trust domain of the default mesh made on first start.")
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), help="Serve the API over TLS.")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--address-file", type=click.Path(path_type=Path), help="Write the API URL here once listening."
)
@click.option(
    "--zone-listen",
    default=None,
    help="HOST:PORT where zone CPs enroll and sync (TLS) [default 127.0.0.1:5685]; port 0 picks one.",
)
@click.option(
    "--zone-name",
    "zone_names",
    multiple=True,
    help="A DNS name or IP zones use to reach --zone-listen (repeatable; goes in its certificate).",
)
@click.option(
    "--zone-address-file",
    type=click.Path(path_type=Path),
    help="Write the zone-facing URL here once listening.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(
    data_dir: Path | None,
    store_url: str | None,
    listen: str | None,
    kek_file: Path | None,
    admin_token_file: Path | None,
    trust_domain: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    address_file: Path | None,
    zone_listen: str | None,
    zone_names: tuple[str, ...],
    zone_address_file: Path | None,
    log_level: str,
) -> None:
    """Run the global CP until SIGTERM or SIGINT."""
    import uvloop

    from global_cp.config import (
        DEFAULT_LISTEN,
        DEFAULT_TRUST_DOMAIN,
        DEFAULT_ZONE_LISTEN,
        GlobalCPConfig,
        default_data_dir,
    )
    from global_cp.server import run as serve
    from meshgate.telemetry import logs

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    logs.configure("global-cp", log_level)
    config = GlobalCPConfig(
        data_dir=data_dir or default_data_dir(),
        store_url=store_url,
        listen=listen or DEFAULT_LISTEN,
        kek_file=kek_file,
        admin_token_file=admin_token_file,
        trust_domain=trust_domain or DEFAULT_TRUST_DOMAIN,
        tls_cert=tls_cert,
        tls_key=tls_key,
        address_file=address_file,
        zone_listen=zone_listen or DEFAULT_ZONE_LISTEN,
        zone_names=zone_names,
        zone_address_file=zone_address_file,
    )
    try:
        uvloop.run(serve(config))
    except Exception as exc:
        click.echo(f"error: global CP failed: {exc}", err=True)
        raise SystemExit(int(Exit.ERROR)) from None

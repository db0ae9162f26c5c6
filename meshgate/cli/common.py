"""What every client command shares: connection options and turning failures into exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from meshgate.cli.client import ApiError, Client, Unreachable
from meshgate.cli.exits import Exit, for_status
from meshgate.cli.settings import SettingsError, resolve

P = ParamSpec("P")
R = TypeVar("R")


def connection_options(fn: Callable[P, R]) -> Callable[P, R]:
    options = [
        click.option("--server", help="Global CP URL [env MESHGATE_SERVER; default http://127.0.0.1:5680]"),
        click.option("--token", help="API token [env MESHGATE_TOKEN]"),
        click.option(
            "--token-file",
            type=click.Path(path_type=Path),
            help="File holding the API token [env MESHGATE_TOKEN_FILE]",
        ),
        click.option(
            "--ca-file",
            type=click.Path(path_type=Path),
            help="CA bundle for an https server [env MESHGATE_CA_FILE]",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="CLI config file [env MESHGATE_CONFIG]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def make_client(kwargs: dict[str, Any]) -> Client:
    try:
        settings = resolve(
            server=kwargs.pop("server"),
            token=kwargs.pop("token"),
            token_file=kwargs.pop("token_file"),
            ca_file=kwargs.pop("ca_file"),
            config=kwargs.pop("config_file"),
        )
    except SettingsError as exc:
        fail(str(exc), Exit.USAGE)
    return Client(settings)


def fail(message: str, code: Exit) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(int(code))


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Unreachable as exc:
            fail(str(exc), Exit.UNAVAILABLE)
        except ApiError as exc:
            report_api_error(exc)
            sys.exit(int(for_status(exc.status)))
        raise AssertionError("unreachable")

    return wrapper


def report_api_error(exc: ApiError, where: Callable[[int], str] | None = None) -> None:
    click.echo(f"error: {exc} (HTTP {exc.status} {exc.reason})", err=True)
    for v in exc.violations:
        doc = v.get("document")
        prefix = ""
        if doc is not None:
            prefix = where(doc) if where else f"document {doc}"
            if v.get("kind"):
                prefix += f" ({v['kind']}/{v.get('name') or '?'})"
            prefix += ": "
        path = f"{v['path']}: " if v.get("path") else ""
        click.echo(f"  {prefix}{path}{v['message']}", err=True)
    if exc.retry_after:
        click.echo(f"  retry after {exc.retry_after}s", err=True)

"""``--ca-fingerprint`` of ``zone-cp run``, ``proxy run`` and ``edge run``: the global CA the join
token must name, checked before anything starts.

A join token carries the fingerprint of the CA its holder must find at the server on first
contact (enrollment pins it). An operator who knows that fingerprint (Terraform passes it to
every host it renders) gives it as well, so a token from another installation, or a mix-up of
tokens, is refused at once: a clear error, exit 5, nothing written to the data dir.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from meshgate.cli.exits import Exit

F = TypeVar("F", bound=Callable[..., object])

ENV = "MESHGATE_CA_FINGERPRINT"
_FORMAT = re.compile(r"sha256:[0-9a-f]{64}")


def ca_fingerprint_option(fn: F) -> F:
    option = click.option(
        "--ca-fingerprint",
        envvar=ENV,
        callback=_checked,
        metavar="sha256:HEX",
        help="The global CA's fingerprint: refuse a join token that names another CA "
        f"[env {ENV}; as in the token: sha256 and 64 hex digits].",
    )
    return option(fn)


def _checked(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    normalized = value.strip().lower()
    if not _FORMAT.fullmatch(normalized):
        raise click.BadParameter(f"{value!r} is not sha256:<64 hex digits>")
    return normalized


def check_token(token_file: Path | None, expected: str | None) -> None:
    """Exit (5) when the join token in ``token_file`` names another CA than ``expected`` (3 when
    it is not a join token). Nothing to check without either; a token file that does not exist
    is left to enrollment, which needs it only when the data dir holds no identity yet."""
    if expected is None or token_file is None:
        return
    from meshgate.pki import join_tokens

    try:
        text = token_file.read_text().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        _fail(f"cannot read the join token {token_file}: {exc.strerror or exc}", Exit.INVALID)
    try:
        named = join_tokens.read_unverified(text).ca_fingerprint
    except join_tokens.TokenError as exc:
        _fail(f"{token_file} holds no readable join token: {exc}", Exit.INVALID)
    if named != expected:
        _fail(
            f"the join token in {token_file} names the CA {named}, but --ca-fingerprint is {expected}: "
            "refusing it (a token of another installation, or the wrong fingerprint)",
            Exit.AUTH,
        )


def _fail(message: str, code: Exit) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(int(code))

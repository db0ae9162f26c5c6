"""What every enrolled data-plane process (proxy, ingress, edge) does at start-up: its identity
from the data dir or from enrollment, and the last good configuration it may serve from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from meshgate.sync.backoff import Backoff
from zones.enroll import EnrollError, ZoneCP, enroll
from zones.runtime import BadConfig
from zones.state import Identity, ProxyState

log = logging.getLogger(__name__)

R = TypeVar("R")


async def identity_or_enroll(
    zone_cp: ZoneCP, data_dir: Path, token: str | None, *, role: str, service: str, name: str,
    ttl: float | None,
) -> Identity:  # fmt: skip
    """The persisted identity, or a new one from enrollment (retried while the zone CP is away)."""
    state = ProxyState(data_dir)
    identity = state.load_identity()
    if identity is not None:
        return identity
    if token is None:
        raise EnrollError(f"no identity in {data_dir} and no --token-file to enroll with", retry=False)
    backoff = Backoff(0.2, 5.0)
    while True:
        try:
            identity = await enroll(zone_cp, token, role, service, name, ttl)
            break
        except EnrollError as exc:
            if not exc.retry:
                raise
            log.warning("enrollment: %s; retrying", exc)
            await asyncio.sleep(backoff.next())
    state.save_identity(identity)
    log.info("enrolled", extra={"identity": identity.spiffe_id, "not_after": identity.not_after})
    return identity


def last_config(
    state: ProxyState, builder: Callable[[int, dict[str, dict[str, Any]]], R], apply: Callable[[R], None]
) -> tuple[int, dict[str, dict[str, Any]]]:
    """Apply the persisted configuration, if it is readable and valid: (version, documents), or
    (0, {}) to wait for the zone CP."""
    try:
        version, documents = state.load_config()
    except (OSError, ValueError, KeyError) as exc:
        log.warning("the persisted configuration is unreadable, waiting for the zone CP: %s", exc)
        return 0, {}
    if not documents:
        return 0, {}
    try:
        runtime = builder(version, documents)
    except BadConfig as exc:
        log.warning("the persisted configuration is refused, waiting for the zone CP: %s", exc)
        return 0, {}
    apply(runtime)
    log.info("serving the persisted configuration until the zone CP answers", extra={"version": version})
    return version, documents

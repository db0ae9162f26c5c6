"""``POST /api/v1/tokens`` and ``GET /api/v1/meshes/{name}/ca``."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from global_cp.api.state import state_of
from global_cp.tokens import TokenRequest, TtlTooLong
from meshgate.clock import rfc3339
from meshgate.resources.kinds.system import MeshCASpec
from meshgate.resources.validation import pydantic_violations
from meshgate.resources.violations import ValidationFailed, Violation


async def create_token(request: web.Request) -> web.Response:
    state = state_of(request)
    if state.issuer is None:
        raise web.HTTPServiceUnavailable(text="token key not loaded yet")
    try:
        wanted = TokenRequest.model_validate(await request.json())
    except ValidationError as exc:
        raise ValidationFailed(pydantic_violations(exc, ())) from None
    try:
        token, claims = await state.issuer.issue(wanted)
    except TtlTooLong as exc:
        raise ValidationFailed([Violation("ttl", str(exc))]) from None
    return web.json_response(
        {
            "token": token,
            "role": claims.role,
            "zone": claims.zone,
            "mesh": claims.mesh,
            "tokenID": claims.token_id,
            "expiresAt": rfc3339(claims.expires_at),
            "reusable": claims.reusable,
            "caFingerprint": claims.ca_fingerprint,
        },
        status=201,
    )


async def mesh_ca(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info["name"]
    mesh = await state.store.get("Mesh", name)
    ca = (await state.store.get("MeshCA", name)).spec_as(MeshCASpec)
    return web.json_response(
        {
            "mesh": mesh.name,
            "trustDomain": mesh.spec_dict()["trustDomain"],
            "fingerprint": ca.fingerprint,
            "certificate": ca.certificate,
        }
    )

"""Join tokens: how a zone CP, edge, ingress or proxy proves it may enroll.

Format: ``mgjt1.<base64url(JSON claims)>.<base64url(Ed25519 signature)>``, unpadded base64url,
the signature covering ``mgjt1.<payload>`` exactly as sent. Claims (all required, no others):

``role`` (zone | edge | ingress | proxy), ``zone``, ``mesh``, ``token_id`` (128 random bits,
base64url), ``issued_at`` and ``expires_at`` (Unix seconds), ``reusable``, ``ca_fingerprint``
(``sha256:<hex>`` of the CA certificate the newcomer must see at the server on first contact) and
``key_id`` (which token-signing key signed it).

The global CP signs; zone CPs verify proxy/edge/ingress tokens offline with the public keys they
receive by sync. ``verify`` checks the signature, the time window and the scope only: single use
is the redeemer's job. A redeemer must record the ``token_id`` of every non-reusable token it
accepts (until its ``expires_at``) and refuse a second redemption, atomically with issuing the
certificate; a reusable token may be redeemed until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshgate.pki.clock import CLOCK_SKEW, as_utc
from meshgate.pki.identities import is_dns_label

TokenRole = Literal["zone", "edge", "ingress", "proxy"]
Reason = Literal[
    "malformed",
    "unknown-key",
    "bad-signature",
    "expired",
    "not-yet-valid",
    "wrong-role",
    "wrong-zone",
]

PREFIX = "mgjt1"
MAX_TOKEN_BYTES = 4096
_ROLES: frozenset[str] = frozenset(get_args(TokenRole))
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


class TokenError(Exception):
    """A token was refused; ``reason`` is a stable code, the message says more."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex characters naming a token-signing public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(b"meshgate join-token key v1\x00" + raw).hexdigest()[:16]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Strict unpadded base64url: the only encoding of its bytes (no spare bits set)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("malformed", f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", f"{what} is not unpadded base64url") from None
    if _b64encode(data) != text:
        raise TokenError("malformed", f"{what} is not canonical base64url")
    return data


def encode_public_key(public_key: Ed25519PublicKey) -> str:
    """Unpadded base64url of the raw 32-byte key (how the key travels by sync)."""
    return _b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def decode_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = _b64decode(text, "public key")
    except TokenError as exc:
        raise ValueError(str(exc)) from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinTokenClaims:
    role: TokenRole
    zone: str
    mesh: str = "default"
    token_id: str
    issued_at: datetime
    expires_at: datetime
    reusable: bool = False
    ca_fingerprint: str
    key_id: str

    def __post_init__(self) -> None:
        problem = _claims_problem(self)
        if problem:
            raise ValueError(problem)

    @classmethod
    def new(
        cls,
        *,
        role: TokenRole,
        zone: str,
        now: datetime,
        ttl: timedelta,
        ca_fingerprint: str,
        key_id: str,
        mesh: str = "default",
        reusable: bool = False,
    ) -> JoinTokenClaims:
        """Claims with a fresh random token_id, issued at ``now`` (whole seconds)."""
        issued = as_utc(now).replace(microsecond=0)
        return cls(
            role=role,
            zone=zone,
            issued_at=issued,
            expires_at=issued + ttl,
            ca_fingerprint=ca_fingerprint,
            key_id=key_id,
            token_id=_b64encode(secrets.token_bytes(16)),
            mesh=mesh,
            reusable=reusable,
        )


def _claims_problem(c: JoinTokenClaims) -> str | None:
    if c.role not in _ROLES:
        return f"role must be one of {sorted(_ROLES)}, got {c.role!r}"
    for field_name, value in (("zone", c.zone), ("mesh", c.mesh)):
        if not is_dns_label(value):
            return f"{field_name} {value!r} is not a DNS label"
    for field_name, when in (("issued_at", c.issued_at), ("expires_at", c.expires_at)):
        if not isinstance(when, datetime) or when.utcoffset() is None:
            return f"{field_name} must be a timezone-aware datetime"
        if when.microsecond:
            return f"{field_name} must be whole seconds (tokens carry Unix seconds)"
    if c.expires_at <= c.issued_at:
        return "expires_at must be after issued_at"
    if not isinstance(c.token_id, str) or not _TOKEN_ID.fullmatch(c.token_id):
        return "token_id must be 22 base64url characters (128 bits)"
    if not isinstance(c.key_id, str) or not _KEY_ID.fullmatch(c.key_id):
        return "key_id must be 16 lowercase hex characters"
    if not isinstance(c.ca_fingerprint, str) or not _FINGERPRINT.fullmatch(c.ca_fingerprint):
        return "ca_fingerprint must be sha256:<64 lowercase hex>"
    if not isinstance(cast(object, c.reusable), bool):
        return "reusable must be a boolean"
    return None


_FIELDS: dict[str, type] = {
    "role": str,
    "zone": str,
    "mesh": str,
    "token_id": str,
    "issued_at": int,
    "expires_at": int,
    "reusable": bool,
    "ca_fingerprint": str,
    "key_id": str,
}


def _payload(claims: JoinTokenClaims) -> dict[str, Any]:
    return {
        "role": claims.role,
        "zone": claims.zone,
        "mesh": claims.mesh,
        "token_id": claims.token_id,
        "issued_at": int(claims.issued_at.timestamp()),
        "expires_at": int(claims.expires_at.timestamp()),
        "reusable": claims.reusable,
        "ca_fingerprint": claims.ca_fingerprint,
        "key_id": claims.key_id,
    }


def sign(claims: JoinTokenClaims, key: Ed25519PrivateKey) -> str:
    """The token text for ``claims``; ``claims.key_id`` must name ``key``."""
    if claims.key_id != key_id(key.public_key()):
        raise ValueError("claims.key_id does not name the signing key")
    body = json.dumps(_payload(claims), separators=(",", ":"), sort_keys=True)
    signing_input = f"{PREFIX}.{_b64encode(body.encode())}"
    return f"{signing_input}.{_b64encode(key.sign(signing_input.encode()))}"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise TokenError("malformed", f"claim {name!r} appears twice")
        result[name] = value
    return result


def _parse_claims(payload: bytes) -> JoinTokenClaims:
    try:
        data = json.loads(payload.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError):
        raise TokenError("malformed", "claims are not JSON") from None
    if not isinstance(data, dict):
        raise TokenError("malformed", "claims are not a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    missing = sorted(set(_FIELDS) - set(data))
    if unknown:
        raise TokenError("malformed", f"unknown claims {unknown}")
    if missing:
        raise TokenError("malformed", f"missing claims {missing}")
    for name, kind in _FIELDS.items():
        value = data[name]
        # bool is a subclass of int: check the exact type
        if type(value) is not kind:
            raise TokenError("malformed", f"claim {name!r} must be of type {kind.__name__}")
        if isinstance(value, int) and kind is int and not 0 <= value <= _MAX_TIME:
            raise TokenError("malformed", f"claim {name!r} is out of range")
    try:
        return JoinTokenClaims(
            role=data["role"],
            zone=data["zone"],
            mesh=data["mesh"],
            token_id=data["token_id"],
            issued_at=datetime.fromtimestamp(data["issued_at"], UTC),
            expires_at=datetime.fromtimestamp(data["expires_at"], UTC),
            reusable=data["reusable"],
            ca_fingerprint=data["ca_fingerprint"],
            key_id=data["key_id"],
        )
    except ValueError as exc:
        raise TokenError("malformed", str(exc)) from None


def verify(
    token: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    now: datetime,
    role: TokenRole | None = None,
    zone: str | None = None,
) -> JoinTokenClaims:
    """The claims of ``token`` once its signature, time window and scope hold.

    ``public_keys`` maps key ids to token-signing public keys. ``issued_at`` may be up to
    ``CLOCK_SKEW`` in the future (signer clock ahead); ``expires_at`` is exact.
    """
    now = as_utc(now)
    if not isinstance(token, str):
        raise TokenError("malformed", "token is not text")
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise TokenError("malformed", f"token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("malformed", f"not a {PREFIX} token")
    claims = _parse_claims(_b64decode(parts[1], "claims"))
    signature = _b64decode(parts[2], "signature")
    if len(signature) != 64:
        raise TokenError("malformed", "signature is not 64 bytes")
    public_key = public_keys.get(claims.key_id)
    if public_key is None:
        raise TokenError("unknown-key", f"token was signed by unknown key {claims.key_id}")
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise TokenError("bad-signature", "token signature does not verify") from None
    if now >= claims.expires_at:
        raise TokenError("expired", f"token expired at {claims.expires_at.isoformat()}")
    if now + CLOCK_SKEW < claims.issued_at:
        raise TokenError("not-yet-valid", f"token is issued at {claims.issued_at.isoformat()}")
    if role is not None and claims.role != role:
        raise TokenError("wrong-role", f"token is for role {claims.role!r}, not {role!r}")
    if zone is not None and claims.zone != zone:
        raise TokenError("wrong-zone", f"token is for zone {claims.zone!r}, not {zone!r}")
    return claims


def read_unverified(token: str) -> JoinTokenClaims:
    """The claims of ``token`` WITHOUT checking its signature.

    Only for a newcomer's first contact, before it holds any verification key: it learns which
    CA fingerprint and zone the token names, checks the server's CA against that fingerprint,
    and hands the token to the server, which verifies it. Never authorise anything with this.
    """
    if not isinstance(token, str) or len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise TokenError("malformed", "token is not text of a sensible length")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("malformed", f"not a {PREFIX} token")
    return _parse_claims(_b64decode(parts[1], "claims"))

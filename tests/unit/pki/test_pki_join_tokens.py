from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgate.pki.join_tokens import (
    MAX_TOKEN_BYTES,
    JoinTokenClaims,
    TokenError,
    decode_public_key,
    encode_public_key,
    key_id,
    new_signing_key,
    sign,
    verify,
)
from tests.unit.pki.pki_certs import NOW

FINGERPRINT = "sha256:" + "ab" * 32
KEY = new_signing_key()
KID = key_id(KEY.public_key())
KEYS = {KID: KEY.public_key()}


def claims(**overrides: Any) -> JoinTokenClaims:
    fields: dict[str, Any] = {
        "role": "proxy",
        "zone": "eu",
        "now": NOW,
        "ttl": timedelta(hours=1),
        "ca_fingerprint": FINGERPRINT,
        "key_id": KID,
    }
    fields.update(overrides)
    return JoinTokenClaims.new(**fields)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_payload(payload: bytes, key: Ed25519PrivateKey = KEY) -> str:
    """A token with a valid signature over an arbitrary payload."""
    signing_input = f"mgjt1.{b64(payload)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def payload_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


def reason(token: str, **kwargs: Any) -> str:
    kwargs.setdefault("now", NOW)
    with pytest.raises(TokenError) as info:
        verify(token, kwargs.pop("keys", KEYS), **kwargs)
    return info.value.reason


def test_sign_verify_round_trip() -> None:
    original = claims(role="zone", zone="us", mesh="prod", reusable=True)
    token = sign(original, KEY)
    assert token.startswith("mgjt1.")
    assert re.fullmatch(r"mgjt1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert verify(token, KEYS, now=NOW, role="zone", zone="us") == original


def test_new_claims_carry_a_random_128_bit_token_id() -> None:
    first, second = claims(), claims()
    assert first.token_id != second.token_id
    assert len(base64.urlsafe_b64decode(first.token_id + "==")) == 16
    assert first.issued_at == NOW
    assert first.expires_at == NOW + timedelta(hours=1)
    assert first.mesh == "default"
    assert first.reusable is False


def test_key_ids_name_keys() -> None:
    other = new_signing_key()
    assert re.fullmatch(r"[0-9a-f]{16}", KID)
    assert key_id(KEY.public_key()) == KID
    assert key_id(other.public_key()) != KID
    assert key_id(decode_public_key(encode_public_key(KEY.public_key()))) == KID


def test_sign_refuses_claims_naming_another_key() -> None:
    with pytest.raises(ValueError, match="does not name the signing key"):
        sign(claims(), new_signing_key())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role": "admin"}, "role must be one of"),
        ({"zone": "EU"}, "zone 'EU' is not a DNS label"),
        ({"mesh": "my_mesh"}, "mesh 'my_mesh' is not a DNS label"),
        ({"ttl": timedelta(0)}, "expires_at must be after issued_at"),
        ({"ca_fingerprint": "sha1:abc"}, "ca_fingerprint"),
        ({"key_id": "KEY"}, "key_id"),
    ],
)
def test_claims_refuse_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        claims(**overrides)


def test_expired_and_not_yet_valid() -> None:
    token = sign(claims(ttl=timedelta(hours=1)), KEY)
    verify(token, KEYS, now=NOW + timedelta(minutes=59, seconds=59))
    assert reason(token, now=NOW + timedelta(hours=1)) == "expired"
    # the signer's clock may run a little ahead of ours
    verify(token, KEYS, now=NOW - timedelta(minutes=4))
    assert reason(token, now=NOW - timedelta(minutes=6)) == "not-yet-valid"


def test_wrong_role_and_zone() -> None:
    token = sign(claims(role="edge", zone="eu"), KEY)
    assert reason(token, role="proxy") == "wrong-role"
    assert reason(token, zone="us") == "wrong-zone"
    assert verify(token, KEYS, now=NOW, role="edge", zone="eu").role == "edge"


def test_unknown_key() -> None:
    token = sign(claims(), KEY)
    other = new_signing_key()
    assert reason(token, keys={key_id(other.public_key()): other.public_key()}) == "unknown-key"
    assert reason(token, keys={}) == "unknown-key"


def test_bad_signature_from_a_key_claiming_a_known_id() -> None:
    impostor = new_signing_key()
    payload = json.dumps(payload_of(sign(claims(), KEY))).encode()  # names KID
    assert reason(signed_payload(payload, impostor)) == "bad-signature"


def test_signature_covers_the_prefix() -> None:
    token = sign(claims(), KEY)
    assert reason("mgjt2" + token[5:]) == "malformed"
    body = token.split(".")[1]
    payload_only = f"mgjt1.{body}.{b64(KEY.sign(body.encode()))}"
    assert reason(payload_only) == "bad-signature"


def _valid_payload() -> dict[str, Any]:
    return payload_of(sign(claims(), KEY))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(extra="x"),
        lambda p: p.pop("mesh"),
        lambda p: p.update(issued_at=str(p["issued_at"])),
        lambda p: p.update(issued_at=float(p["issued_at"])),
        lambda p: p.update(expires_at=True),
        lambda p: p.update(reusable=1),
        lambda p: p.update(role=["proxy"]),
        lambda p: p.update(zone=None),
        lambda p: p.update(expires_at=2**62),
        lambda p: p.update(token_id="short"),
        lambda p: p.update(expires_at=p["issued_at"]),
    ],
)
def test_strict_claims_parsing(mutate: Any) -> None:
    payload = _valid_payload()
    mutate(payload)
    assert reason(signed_payload(json.dumps(payload).encode())) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b"",
        b'{"role": "proxy", "role": "zone"}',
        "\u00e9".encode("latin-1"),
    ],
)
def test_payloads_that_are_not_a_claims_object(payload: bytes) -> None:
    assert reason(signed_payload(payload)) == "malformed"


def test_duplicate_claims_are_refused_even_when_otherwise_valid() -> None:
    payload = _valid_payload()
    text = json.dumps(payload)
    doubled = text[:-1] + ', "zone": "us"}'
    assert reason(signed_payload(doubled.encode())) == "malformed"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mgjt1",
        "mgjt1..",
        "mgjt1.a.b.c",
        "mgjt1.e30=.AAAA",  # padding is not allowed
        "mgjt1.e30.AAAA",  # {} and a short signature
        "x" * (MAX_TOKEN_BYTES + 1),
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert reason(token) == "malformed"


def test_oversized_tokens_are_refused_before_parsing() -> None:
    token = signed_payload(json.dumps(_valid_payload()).encode() + b" " * MAX_TOKEN_BYTES)
    assert reason(token) == "malformed"


def test_token_error_message_names_the_reason() -> None:
    with pytest.raises(TokenError, match=r"^expired: token expired at"):
        verify(sign(claims(), KEY), KEYS, now=NOW + timedelta(days=1))


TOKEN = sign(claims(reusable=True), KEY)


# the last characters carry base64's spare bits, where a lax decoder would not notice a change
_INDEX = st.one_of(st.integers(len(TOKEN) - 3, len(TOKEN) - 1), st.integers(0, len(TOKEN) - 1))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=500)
@given(index=_INDEX, value=st.sampled_from(b"AEIQgw-_ABCDEFGHIJKLMNOPQRSTUVWXYZ") | st.integers(0, 255))
def test_tampering_any_byte_makes_verify_fail(index: int, value: int) -> None:
    raw = bytearray(TOKEN.encode())
    if raw[index] == value:
        value ^= 1
    raw[index] = value
    with pytest.raises(TokenError):
        verify(bytes(raw).decode("latin-1"), KEYS, now=NOW)


def test_spare_bits_of_the_signature_are_checked() -> None:
    prefix, body, signature = TOKEN.split(".")
    same_bytes = [
        c
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        if c != signature[-1]
        and base64.urlsafe_b64decode(signature[:-1] + c + "==") == base64.urlsafe_b64decode(signature + "==")
    ]
    assert same_bytes  # 64-byte signatures leave 4 spare bits in the last character
    for c in same_bytes:
        assert reason(f"{prefix}.{body}.{signature[:-1]}{c}") == "malformed"


@given(index=_INDEX)
def test_deleting_any_byte_makes_verify_fail(index: int) -> None:
    with pytest.raises(TokenError):
        verify(TOKEN[:index] + TOKEN[index + 1 :], KEYS, now=NOW)


def test_claims_are_frozen() -> None:
    c = claims()
    with pytest.raises(AttributeError):
        c.zone = "us"  # type: ignore[misc]
    assert replace(c, zone="us").zone == "us"


def test_read_unverified_shows_claims_but_verify_still_decides() -> None:
    from datetime import UTC, datetime, timedelta

    from meshgate.pki import join_tokens as jt

    key, other = jt.new_signing_key(), jt.new_signing_key()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    claims = jt.JoinTokenClaims.new(
        role="zone",
        zone="eu",
        now=now,
        ttl=timedelta(hours=1),
        ca_fingerprint="sha256:" + "a" * 64,
        key_id=jt.key_id(key.public_key()),
    )
    token = jt.sign(claims, key)
    assert jt.read_unverified(token).ca_fingerprint == "sha256:" + "a" * 64
    with pytest.raises(jt.TokenError) as refused:  # the server holds another key under that id
        jt.verify(token, {jt.key_id(key.public_key()): other.public_key()}, now=now)
    assert refused.value.reason == "bad-signature"
    with pytest.raises(jt.TokenError):
        jt.read_unverified("mgjt1.not-base64!.x")

"""Sync messages: strict parsing of untrusted JSON into typed messages, and back."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_VERSION = re.compile(r"^[0-9a-f]{24}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProtocolError(Exception):
    """The peer broke the protocol: close the connection with this reason."""


@dataclass(frozen=True, slots=True)
class Hello:
    known: dict[str, str]  # key -> content version
    applied_version: int = 0


@dataclass(frozen=True, slots=True)
class Upsert:
    key: str
    version: str
    doc: dict[str, Any]
    text: str | None = field(default=None, compare=False)  # doc as JSON, when already encoded


@dataclass(frozen=True, slots=True)
class Update:
    nonce: str
    version: int
    upserts: tuple[Upsert, ...] = ()
    removals: tuple[str, ...] = ()
    final: bool = True


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: str
    version: int


@dataclass(frozen=True, slots=True)
class Nack:
    nonce: str
    version: int
    error: str
    details: tuple[str, ...] = field(default_factory=tuple)


Message = Hello | Update | Ack | Nack


def _upsert_json(upsert: Upsert) -> str:
    doc = upsert.text if upsert.text is not None else json.dumps(upsert.doc, separators=(",", ":"))
    return f'{{"key":{json.dumps(upsert.key)},"version":"{upsert.version}","doc":{doc}}}'


def _encode_update(update: Update) -> str:
    """An update's JSON, splicing in documents already encoded once for every sink."""
    upserts = ",".join(_upsert_json(u) for u in update.upserts)
    return (
        f'{{"type":"update","nonce":{json.dumps(update.nonce)},"version":{update.version},'
        f'"upserts":[{upserts}],"removals":{json.dumps(list(update.removals))},'
        f'"final":{"true" if update.final else "false"}}}'
    )


def encode(message: Message) -> str:
    body: dict[str, Any]
    if isinstance(message, Update):
        return _encode_update(message)
    match message:
        case Hello(known=known, applied_version=applied):
            body = {"type": "hello", "known": known, "appliedVersion": applied}
        case Ack(nonce=nonce, version=version):
            body = {"type": "ack", "nonce": nonce, "version": version}
        case Nack():
            body = {
                "type": "nack",
                "nonce": message.nonce,
                "version": message.version,
                "error": message.error,
                "details": list(message.details),
            }
    return json.dumps(body, separators=(",", ":"))


def decode(text: str | bytes) -> Message:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("message must be a JSON object")
    kind = body.get("type")
    if kind == "hello":
        _fields(body, {"type", "known", "appliedVersion"})
        known = body.get("known")
        if not isinstance(known, dict):
            raise ProtocolError("hello.known must be an object")
        for key, version in known.items():
            _check_key(key)
            _check_version(version)
        return Hello(known, _int(body.get("appliedVersion", 0), "hello.appliedVersion"))
    if kind == "update":
        _fields(body, {"type", "nonce", "version", "upserts", "removals", "final"})
        upserts = body.get("upserts")
        removals = body.get("removals")
        if not isinstance(upserts, list) or not isinstance(removals, list):
            raise ProtocolError("update.upserts and update.removals must be lists")
        items = []
        for item in upserts:
            if not isinstance(item, dict) or set(item) != {"key", "version", "doc"}:
                raise ProtocolError("update.upserts[] must be {key, version, doc}")
            _check_key(item["key"])
            _check_version(item["version"])
            if not isinstance(item["doc"], dict):
                raise ProtocolError("update.upserts[].doc must be an object")
            items.append(Upsert(item["key"], item["version"], item["doc"]))
        for key in removals:
            _check_key(key)
        final = body.get("final")
        if not isinstance(final, bool):
            raise ProtocolError("update.final must be true or false")
        return Update(
            _nonce(body), _int(body.get("version"), "update.version"), tuple(items), tuple(removals), final
        )
    if kind == "ack":
        _fields(body, {"type", "nonce", "version"})
        return Ack(_nonce(body), _int(body.get("version"), "ack.version"))
    if kind == "nack":
        _fields(body, {"type", "nonce", "version", "error", "details"})
        error, details = body.get("error"), body.get("details", [])
        if not isinstance(error, str) or not isinstance(details, list):
            raise ProtocolError("nack.error must be a string and nack.details a list")
        return Nack(
            _nonce(body),
            _int(body.get("version"), "nack.version"),
            error[:4096],
            tuple(str(d)[:1024] for d in details[:200]),
        )
    raise ProtocolError(f"unknown message type {kind!r}")


def _fields(body: dict[str, Any], allowed: set[str]) -> None:
    extra = set(body) - allowed
    if extra:
        raise ProtocolError(f"{body['type']}: unknown field(s) {sorted(extra)}")


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ProtocolError(f"malformed resource key {key!r}")


def _check_version(version: object) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ProtocolError(f"malformed content version {version!r}")


def _nonce(body: dict[str, Any]) -> str:
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise ProtocolError(f"malformed nonce {nonce!r}")
    return nonce


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what} must be a non-negative integer")
    return value

"""Field types shared by every kind, each with a message an operator can act on.

Pydantic's own messages for patterns are regex dumps; these validators say what is wanted.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(rf"^{_LABEL}$")
_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_DURATION_PART = re.compile(r"(\d+)(ms|h|m|s)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("meshgate", message)


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise _fail(
            "must be a DNS label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _subdomain(value: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise _fail("must be lowercase DNS labels joined by '.' (letters, digits, '-'), at most 253 chars")
    return value


def _hostname(value: str) -> str:
    if len(value) > 253 or not _HOSTNAME.fullmatch(value) or any(len(p) > 63 for p in value.split(".")):
        raise _fail("must be a lowercase DNS hostname, optionally starting with '*.'")
    return value


def _ip(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise _fail("must be an IPv4 or IPv6 address") from None
    if addr.is_unspecified or addr.is_multicast:
        raise _fail("must be a unicast host address, not unspecified or multicast")
    return str(addr)


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _fail("must be an IPv4 address (dotted quad)") from None


def parse_duration(value: str) -> float:
    """Seconds in a Go-style duration: ``90s``, ``15m``, ``1h30m``, ``250ms``."""
    if not value or not _DURATION.fullmatch(value):
        raise ValueError(f"invalid duration {value!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(int(n) * scale[u] for n, u in _DURATION_PART.findall(value))


def _duration(value: str) -> str:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise _fail("must be a duration such as 90s, 15m, 24h or 1h30m") from None
    if seconds <= 0:
        raise _fail("must be longer than zero")
    return value


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise _fail("must not contain control characters (newline, tab, NUL, ...)")
    return value


def _timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail("must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise _fail("must carry a time zone (end with Z or +00:00)")
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix))) or (
        not name or len(name) > 63 or not _LABEL_KEY_NAME.fullmatch(name)
    ):
        raise _fail(
            "label keys are [prefix/]name: name is at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit; prefix is a DNS subdomain"
        )
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise _fail(
            "label values are at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _community(value: str) -> str:
    parts = value.split(":")
    limits = {2: 0xFFFF, 3: 0xFFFFFFFF}
    # ASCII digits only: str.isdigit() also takes other scripts' digits, which no BGP speaker reads
    if len(parts) not in limits or not all(p.isascii() and p.isdigit() for p in parts):
        raise _fail("must be a standard community ASN:VALUE or a large community A:B:C")
    if any(int(p) > limits[len(parts)] for p in parts):
        raise _fail("community part out of range (16 bits each for standard, 32 for large)")
    return value


def _int_string(value: object) -> object:
    """resourceVersion is a string, but a hand-written file may carry it as a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Name = Annotated[str, AfterValidator(_subdomain)]
Hostname = Annotated[str, AfterValidator(_hostname)]
IPAddress = Annotated[str, AfterValidator(_ip)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]
Duration = Annotated[str, AfterValidator(_duration)]
Text = Annotated[str, Field(max_length=1024), AfterValidator(_text)]
Timestamp = Annotated[str, AfterValidator(_timestamp)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Community = Annotated[str, AfterValidator(_community)]
Port = Annotated[int, Field(ge=1, le=65535)]
ASN = Annotated[int, Field(ge=1, le=4294967295)]
ResourceVersion = Annotated[str, BeforeValidator(_int_string)]

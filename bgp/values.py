"""Parsers for every value that reaches ExaBGP's configuration or its API.

Each returns the canonical form (``str(ipaddress...)``, a plain ``int``) and raises ``ValueError``
with a message an operator can act on. Callers render only what these return, never the input,
so no text can reach ExaBGP that was not rebuilt from a parsed number or address.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ASN = 4294967295
MAX_MED = 4294967295
MAX_PREPEND = 16

# ASCII digits only: ``\d`` would take any Unicode digit, and ``$`` a trailing newline.
_STANDARD = re.compile(r"[0-9]{1,5}:[0-9]{1,5}")
_LARGE = re.compile(r"[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}")

# RFC 1997, RFC 7999, RFC 8326. Rendered as numbers: ExaBGP 5.0.15 dispatches an API line to
# the first command name found anywhere in it, so "graceful-shutdown" in a route command runs
# its "shutdown" command (measured; see bgp/README.md).
WELL_KNOWN = {
    "graceful-shutdown": "65535:0",
    "blackhole": "65535:666",
    "no-export": "65535:65281",
    "no-advertise": "65535:65282",
    "no-export-subconfed": "65535:65283",
    "nopeer": "65535:65284",
}
GRACEFUL_SHUTDOWN = WELL_KNOWN["graceful-shutdown"]


def integer(value: object, low: int, high: int, what: str) -> int:
    """``value`` as a plain int in [low, high]; booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, not {type(value).__name__}")
    number = int(value)  # an int subclass (IntEnum) renders as its name; a plain int as digits
    if not low <= number <= high:
        raise ValueError(f"{what} must be between {low} and {high}, not {number}")
    return number


def asn(value: object) -> int:
    return integer(value, 1, MAX_ASN, "an AS number")


def med(value: object) -> int:
    return integer(value, 0, MAX_MED, "a MED")


def hold_time(value: object) -> int:
    """RFC 4271: 0 (no keepalives) or at least 3 seconds; 0 is not offered (a dead peer would
    never be noticed), which is also what the control plane accepts."""
    return integer(value, 3, 65535, "a hold time (seconds)")


def address(value: object) -> IPAddress:
    """A unicast host address without a zone index (``fe80::1%eth0`` is refused)."""
    if not isinstance(value, str):
        raise ValueError(f"must be an IP address string, not {type(value).__name__}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IPv4 or IPv6 address, not {value!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise ValueError(f"must not carry a zone index: {value!r}")
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"must be a unicast host address, not {value!r}")
    return addr


def router_id(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be an IPv4 address string, not {type(value).__name__}")
    try:
        rid = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"must be an IPv4 address (dotted quad), not {value!r}") from None
    if int(rid) == 0:
        raise ValueError("must not be 0.0.0.0 (a BGP identifier is non-zero)")
    return str(rid)


def prefix(value: object) -> IPNetwork:
    """A route: ``203.0.113.10/32``, or a bare address (a VIP) as its /32 or /128.
    Host bits must be zero; the default route and multicast are refused."""
    if not isinstance(value, str):
        raise ValueError(f"must be a prefix string, not {type(value).__name__}")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"must be an IP prefix or address with no host bits set, not {value!r}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.scope_id is not None:
        raise ValueError(f"must not carry a zone index: {value!r}")
    if net.prefixlen == 0 or net.is_multicast:
        raise ValueError(f"must not be a default route or multicast: {value!r}")
    return net


def community(value: object) -> str:
    """A standard community ``ASN:VALUE`` (16 bits each), a large community ``A:B:C`` (32 bits
    each) or a well-known name, as its numeric form."""
    if not isinstance(value, str):
        raise ValueError(f"a community must be a string, not {type(value).__name__}")
    if value in WELL_KNOWN:
        return WELL_KNOWN[value]
    if _STANDARD.fullmatch(value):
        limit = 0xFFFF
    elif _LARGE.fullmatch(value):
        limit = 0xFFFFFFFF
    else:
        raise ValueError(
            f"a community must be ASN:VALUE, A:B:C or one of {', '.join(sorted(WELL_KNOWN))}; not {value!r}"
        )
    parts = [int(p) for p in value.split(":")]
    if any(p > limit for p in parts):
        raise ValueError(f"community part out of range (at most {limit}): {value!r}")
    return ":".join(str(p) for p in parts)


def is_large(canonical_community: str) -> bool:
    return canonical_community.count(":") == 2

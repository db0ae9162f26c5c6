"""ExaBGP API lines: the syntax 5.0.15 accepts, canonical prefixes, and no way to inject text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.commands import RouteAttributes, announce, route_prefix, withdraw

PLAIN = RouteAttributes(med=0, communities=("65000:1",))


def test_announce_syntax() -> None:
    assert (
        announce(
            "203.0.113.10/32",
            RouteAttributes(0, ("65000:1",), prepend=2, graceful_shutdown=True),
            local_asn=65000,
        )
        == "announce route 203.0.113.10/32 next-hop self med 0 community [65000:1 65535:0] as-path [65000 65000 65000]"
    )
    assert announce("203.0.113.10", RouteAttributes(7, ()), local_asn=65000) == (
        "announce route 203.0.113.10/32 next-hop self med 7"
    )
    assert announce("2001:DB8::10", PLAIN, local_asn=4200000000, neighbor="2001:db8:0::1") == (
        "neighbor 2001:db8::1 announce route 2001:db8::10/128 next-hop self med 0 community [65000:1]"
    )
    assert announce(
        "198.51.100.0/24", RouteAttributes(0, ("65000:1", "65000:1:2", "no-export")), local_asn=65000
    ) == (
        "announce route 198.51.100.0/24 next-hop self med 0 community [65000:1 65535:65281] large-community [65000:1:2]"
    )


def test_withdraw_syntax() -> None:
    assert withdraw("203.0.113.10") == "withdraw route 203.0.113.10/32"
    assert (
        withdraw("2001:db8::10/128", neighbor="192.0.2.1")
        == "neighbor 192.0.2.1 withdraw route 2001:db8::10/128"
    )


def test_graceful_shutdown_is_never_sent_twice_nor_by_name() -> None:
    attrs = RouteAttributes(0, ("graceful-shutdown", "65535:0"), graceful_shutdown=True)
    assert attrs.communities == ("65535:0",)
    line = announce("203.0.113.10", attrs, local_asn=65000)
    assert line.endswith("community [65535:0]")
    assert "shutdown" not in line  # ExaBGP 5.0.15 would run its `shutdown` command


def test_route_prefix() -> None:
    assert route_prefix("203.0.113.10") == "203.0.113.10/32"
    assert route_prefix("2001:db8::a") == "2001:db8::a/128"
    assert route_prefix("198.51.100.0/255.255.255.0") == "198.51.100.0/24"


INJECTIONS = [
    "203.0.113.10/32\nshutdown",
    "203.0.113.10/32 med 5",
    "203.0.113.10/32;",
    "203.0.113.10/32\r",
    "203.0.113.10/32\n",
    "203.0.113.10/32 ",
    "\uff12\uff10\uff13.0.113.10",  # fullwidth digits
    "\u0662\u0660\u0663.0.113.10",  # Arabic-Indic digits
    "203.0.113.10/\u0663\u0662",
    "203.0.113.10/24",  # host bits
    "0.0.0.0/0",
    "224.0.0.1",
    "fe80::1%eth0",
    "",
    "shutdown",
]


@pytest.mark.parametrize("prefix", INJECTIONS)
def test_a_prefix_that_is_not_one_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="must"):
        announce(prefix, PLAIN, local_asn=65000)
    with pytest.raises(ValueError, match="must"):
        withdraw(prefix)


@pytest.mark.parametrize(
    "neighbor",
    [
        "192.0.2.1 announce route 0.0.0.0/0",
        "192.0.2.1\n",
        "192.0.2.1,",
        "all",
        "\u0661\u0669\u0662.0.2.1",
        "",
    ],
)
def test_a_neighbor_that_is_not_an_address_is_refused(neighbor: str) -> None:
    with pytest.raises(ValueError, match="IPv4 or IPv6 address"):
        announce("203.0.113.10", PLAIN, local_asn=65000, neighbor=neighbor)
    with pytest.raises(ValueError, match="IPv4 or IPv6 address"):
        withdraw("203.0.113.10", neighbor=neighbor)


@pytest.mark.parametrize(
    "community",
    [
        "65000:1]",
        "65000:1 65535:0",
        "65000:1\nshutdown",
        "65000:1;",
        "65000:1 ",
        "65536:1",
        "65000:65536",
        "\u0666\u0665\u0660\u0660\u0660:1",
        "\uff16\uff15\uff10\uff10\uff10:1",
        "65000",
        "65000:1:2:3",
        "4294967296:1:1",
        "graceful-shutdown ",
        "GRACEFUL-SHUTDOWN",
        "shutdown",
        "",
        "+1:1",
        "-1:1",
    ],
)
def test_a_community_that_is_not_one_is_refused(community: str) -> None:
    with pytest.raises(ValueError, match="community"):
        RouteAttributes(0, (community,))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"med": -1},
        {"med": 4294967296},
        {"med": "0"},
        {"med": True},
        {"med": 0.0},
        {"prepend": -1},
        {"prepend": 17},
        {"prepend": "2"},
        {"graceful_shutdown": 1},
        {"communities": ["65000:1"]},
        {"communities": "65000:1"},
        {"communities": (65000,)},
    ],
)
def test_attributes_of_the_wrong_type_or_range_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"med": 0, "communities": ()}
    with pytest.raises(ValueError, match="must be"):
        RouteAttributes(**{**base, **kwargs})  # type: ignore[arg-type]


def test_local_asn_is_checked() -> None:
    for asn in (0, -1, 4294967296, "65000", True):
        with pytest.raises(ValueError, match="an AS number must be"):
            announce("203.0.113.10", PLAIN, local_asn=asn, neighbor=None)  # type: ignore[arg-type]


def exabgp_dispatch(line: str) -> str:
    """The command ExaBGP 5.0.15 would run for ``line`` (its own matching, on its own
    normalisation of the line)."""
    import exabgp.reactor.api.command  # noqa: F401 - registers the commands
    from exabgp.configuration.core.format import formated
    from exabgp.reactor.api.command.command import Command

    command = formated(line)
    for registered in Command.functions:
        if registered == command or command.endswith(" " + registered) or registered + " " in command:
            return registered
    return ""


communities = st.one_of(
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda p: f"{p[0]}:{p[1]}"),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
        lambda p: f"{p[0]}:{p[1]}:{p[2]}"
    ),
    st.sampled_from(
        ["graceful-shutdown", "no-export", "no-advertise", "blackhole", "nopeer", "no-export-subconfed"]
    ),
)


@settings(deadline=None)  # a shared, noisy machine
@given(
    address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(
        lambda a: not (a.is_unspecified or a.is_multicast)
    ),
    med=st.integers(0, 2**32 - 1),
    communities=st.lists(communities, max_size=6).map(tuple),
    prepend=st.integers(0, 16),
    graceful_shutdown=st.booleans(),
    asn=st.integers(1, 2**32 - 1),
    neighbor=st.none()
    | st.ip_addresses(v=4).filter(lambda a: not (a.is_unspecified or a.is_multicast)).map(str),
)
def test_every_rendered_line_is_one_command_to_exabgp(
    address: object,
    med: int,
    communities: tuple[str, ...],
    prepend: int,
    graceful_shutdown: bool,
    asn: int,
    neighbor: str | None,
) -> None:
    attrs = RouteAttributes(med, communities, prepend, graceful_shutdown)
    line = announce(str(address), attrs, local_asn=asn, neighbor=neighbor)
    assert "\n" not in line
    assert "\r" not in line
    assert line.isascii()
    assert exabgp_dispatch(line) == "announce route"
    assert exabgp_dispatch(withdraw(str(address), neighbor=neighbor)) == "withdraw route"


def test_why_well_known_communities_are_numbers() -> None:
    """ExaBGP 5.0.15 runs `shutdown` for a route carrying the community by its name."""
    named = "announce route 203.0.113.10/32 next-hop self community [65000:1 graceful-shutdown]"
    assert exabgp_dispatch(named) == "shutdown"

"""ExaBGP configuration: what is rendered, what is refused before rendering, and what real
``exabgp validate`` (5.0.15) makes of it."""

from __future__ import annotations

import shutil
import sys

import pytest

from bgp.exabgp_config import ConfigInvalid, render, validate
from bgp.settings import BgpSettings, Neighbor

HELPER = [sys.executable, "-I", "-S", "/opt/meshgate/bgp/helper.py", "/run/meshgate/api.sock"]

SETTINGS = BgpSettings(
    local_asn=65000,
    router_id="192.0.2.10",
    hold_time=9,
    neighbors=(
        Neighbor("192.0.2.1", 65001, local_address="192.0.2.10", description="transit"),
        Neighbor("2001:db8::1", 4200000000),
    ),
)


def exabgp() -> str:
    found = shutil.which("exabgp")
    if found is None:
        pytest.skip("exabgp is not installed")
    return found


def test_one_neighbor_block_per_neighbor_in_its_family() -> None:
    text = render(SETTINGS, api_argv=HELPER)
    assert f"    run {' '.join(HELPER)};\n    encoder json;\n    respawn false;\n" in text
    first = text[text.index("neighbor 192.0.2.1 {") : text.index("neighbor 2001:db8::1 {")]
    assert first.splitlines()[:6] == [
        "neighbor 192.0.2.1 {",
        "    router-id 192.0.2.10;",
        "    local-as 65000;",
        "    peer-as 65001;",
        "    hold-time 9;",
        "    local-address 192.0.2.10;",
    ]
    assert "route-refresh;" in first
    assert "ipv4 unicast;" in first
    assert "ipv6" not in first
    second = text[text.index("neighbor 2001:db8::1 {") :]
    assert "peer-as 4200000000;" in second
    assert "local-address" not in second
    assert "ipv6 unicast;" in second
    assert "ipv4" not in second
    assert "processes [ meshgate ];" in second
    assert "neighbor-changes;" in second
    assert "receive { parsed; notification; }" in second
    assert "transit" not in text  # descriptions are for status only


@pytest.mark.parametrize(
    "settings",
    [
        BgpSettings(65000, "192.0.2.10\n}", 90, SETTINGS.neighbors),
        BgpSettings(65000, "192.0.2.10", 90, (Neighbor("192.0.2.1; peer-as 1", 65001),)),
        BgpSettings(65000, "192.0.2.10", 90, (Neighbor("192.0.2.1", 65001, local_address="192.0.2.10 }"),)),
        BgpSettings(65000, "192.0.2.10", 90, (Neighbor("192.0.2.1", "65001;"),)),  # type: ignore[arg-type]
        BgpSettings("65000", "192.0.2.10", 90, SETTINGS.neighbors),  # type: ignore[arg-type]
        BgpSettings(65000, "192.0.2.10", 1, SETTINGS.neighbors),
        BgpSettings(65000, "192.0.2.10", 90, ()),
    ],
)
def test_a_value_that_is_not_what_it_claims_is_refused_before_rendering(settings: BgpSettings) -> None:
    with pytest.raises(ValueError, match=r"must|neighbor"):
        render(settings, api_argv=HELPER)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["python3", "helper.py"],
        [sys.executable, "helper.py;", "x"],
        [sys.executable, "/tmp/a b/helper.py"],
        [sys.executable, "/tmp/helper.py\n}\nprocess x {"],
        [sys.executable, "/tmp/helpér.py"],
        [sys.executable, "#comment"],
    ],
)
def test_the_api_argv_is_plain_words(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="api_argv"):
        render(SETTINGS, api_argv=argv)


def test_real_exabgp_accepts_what_is_rendered() -> None:
    validate(render(SETTINGS, api_argv=HELPER), exabgp=exabgp())


def test_real_exabgp_refusal_is_config_invalid_with_its_reason() -> None:
    mixed = BgpSettings(65000, "192.0.2.10", 90, (Neighbor("192.0.2.1", 65001, local_address="2001:db8::2"),))
    with pytest.raises(ConfigInvalid) as caught:
        validate(render(mixed, api_argv=HELPER), exabgp=exabgp())
    assert "local-address and peer-address must be of the same family" in caught.value.output
    assert caught.value.output.startswith("error: exabgp.conf is not a valid config file")


def test_a_helper_exabgp_cannot_run_is_refused() -> None:
    with pytest.raises(ConfigInvalid, match="can not locate the program"):
        validate(render(SETTINGS, api_argv=["/nonexistent/python3", "x"]), exabgp=exabgp())

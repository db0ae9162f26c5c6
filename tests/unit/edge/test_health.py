"""Whether the edge may announce a VIP: listeners up, configuration fresh, and a reachable zone
for every service on it, each failure with a reason naming what is wrong. No I/O."""

from __future__ import annotations

import asyncio

import pytest

from edge.choice import ZoneBook, ZoneChooser
from edge.health import Verdict, config_verdict, serving_zone, vip_verdicts
from edge.proxy import PublicListener
from edge.runtime import GlobalService, PublicPort, ServingZone, ZoneEndpoint
from meshgate.proxy.listener import Listener

VIP, OTHER_VIP = "203.0.113.10", "203.0.113.11"


def zone(name: str, healthy: int = 1, endpoints: int = 1) -> ServingZone:
    eps = tuple(ZoneEndpoint("10.0.0.1", 10002 + i, f"x.{name}.svc.meshgate") for i in range(endpoints))
    return ServingZone(name, 0, None, None, healthy, eps)


def service(name: str, zones: tuple[ServingZone, ...], vips: tuple[str, ...] = (VIP,),
            ports: tuple[int, ...] = (80,)) -> GlobalService:  # fmt: skip
    return GlobalService(
        name, name, f"spiffe://mesh.example/svc/{name}", (f"{name}.example.com",), vips,
        tuple(PublicPort(f"p{p}", p, "http") for p in ports), None, zones,
    )  # fmt: skip


def listening(port: int, *vips: str) -> PublicListener:
    """A listener entry that is accepting (its Listener object is all the verdict looks at)."""
    return PublicListener(
        "127.0.0.1",
        port,
        "http",
        vips=set(vips),
        listener=Listener(f"edge/{port}", lambda _peer: asyncio.Protocol()),
    )


class Fixture:
    def __init__(self, *services: GlobalService) -> None:
        self.services = {s.name: s for s in services}
        self.book = ZoneBook(eject_after=2)
        self.chooser = ZoneChooser(self.book)

    def verdicts(
        self, listeners: dict[str, list[PublicListener]], config: Verdict | None = None
    ) -> dict[str, Verdict]:
        ranked = {name: self.chooser.order(s) for name, s in self.services.items()}
        return vip_verdicts(self.services, ranked, listeners, self.book, config)


def test_no_configuration_yet_is_unhealthy() -> None:
    assert config_verdict(0, None, 600) == Verdict(False, "no configuration from the zone CP yet")


def test_a_configuration_is_fresh_while_the_link_is_up_or_lost_within_the_budget() -> None:
    assert config_verdict(3, None, 600) is None
    assert config_verdict(3, 599.0, 600) is None
    assert config_verdict(3, 600.0, 600) is None  # at the budget: still fresh
    assert config_verdict(3, 601.0, 600) == Verdict(
        False, "configuration stale: no zone CP for 601s (budget 600s)"
    )


def test_a_vip_with_listeners_up_and_a_reachable_zone_is_healthy() -> None:
    f = Fixture(service("web", (zone("paris"), zone("frankfurt"))))
    f.book.probed("web", "frankfurt", 0.02)
    assert f.verdicts({VIP: [listening(80, VIP)]}) == {VIP: Verdict(True, "serving")}


def test_a_stale_configuration_makes_every_vip_unhealthy_with_its_reason() -> None:
    f = Fixture(service("web", (zone("paris"),)), service("api", (zone("paris"),), vips=(OTHER_VIP,)))
    f.book.probed("web", "paris", 0.02)
    f.book.probed("api", "paris", 0.02)
    stale = config_verdict(5, 900.0, 600.0)
    listeners = {VIP: [listening(80, VIP)], OTHER_VIP: [listening(80, OTHER_VIP)]}
    assert f.verdicts(listeners, stale) == {VIP: stale, OTHER_VIP: stale}


def test_a_port_not_listened_on_yet_or_failed_makes_the_vip_unhealthy() -> None:
    f = Fixture(service("web", (zone("paris"),), ports=(80, 443)))
    f.book.probed("web", "paris", 0.02)
    assert f.verdicts({VIP: [listening(80, VIP)]})[VIP] == Verdict(False, "not listening on every port yet")
    assert f.verdicts({})[VIP] == Verdict(False, "not listening on every port yet")
    failed = PublicListener("127.0.0.1", 443, "https", vips={VIP}, error="no certificate for this https port")
    assert f.verdicts({VIP: [listening(80, VIP), failed]})[VIP] == Verdict(
        False, "port 443: no certificate for this https port"
    )
    quiet = PublicListener("127.0.0.1", 443, "https", vips={VIP})
    assert f.verdicts({VIP: [listening(80, VIP), quiet]})[VIP] == Verdict(False, "port 443: not listening")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("never probed", "no zone can serve api (paris: 1 healthy, frankfurt: 2 healthy)"),
        ("unreachable", "no zone can serve api (paris: 1 healthy, frankfurt: 2 healthy)"),
        ("ejected", "no zone can serve api (paris: 1 healthy, frankfurt: 2 healthy)"),
        ("nothing healthy", "no zone can serve api (paris: 0 healthy, frankfurt: 0 healthy)"),
        ("no ingress", "no zone can serve api (paris: 1 healthy, frankfurt: 2 healthy)"),
        ("no zone", "no zone can serve api (no zone)"),
    ],
)
def test_a_service_without_a_reachable_zone_makes_its_vip_unhealthy_naming_it(case: str, reason: str) -> None:
    zones = {
        "nothing healthy": (zone("paris", healthy=0), zone("frankfurt", healthy=0)),
        "no ingress": (zone("paris", endpoints=0), zone("frankfurt", healthy=2, endpoints=0)),
        "no zone": (),
    }.get(case, (zone("paris"), zone("frankfurt", healthy=2)))
    web = service("web", (zone("paris"),))
    api = service("api", zones, vips=(VIP, OTHER_VIP))
    f = Fixture(web, api)
    f.book.probed("web", "paris", 0.02)  # web itself is fine: api alone spoils the VIP
    for name in ("paris", "frankfurt"):
        if case == "unreachable":
            f.book.probed("api", name, None, "handshake refused")
        elif case != "never probed":
            f.book.probed("api", name, 0.01)
        if case == "ejected":
            f.book.request_failed("api", name)
            f.book.request_failed("api", name)
    verdicts = f.verdicts({VIP: [listening(80, VIP)], OTHER_VIP: [listening(80, OTHER_VIP)]})
    assert verdicts == {VIP: Verdict(False, reason), OTHER_VIP: Verdict(False, reason)}


def test_one_vip_failing_leaves_the_others_healthy() -> None:
    f = Fixture(service("web", (zone("paris"),)), service("api", (zone("paris"),), vips=(OTHER_VIP,)))
    f.book.probed("web", "paris", 0.02)
    f.book.probed("api", "paris", None, "refused")
    verdicts = f.verdicts({VIP: [listening(80, VIP)], OTHER_VIP: [listening(80, OTHER_VIP)]})
    assert verdicts[VIP] == Verdict(True, "serving")
    assert verdicts[OTHER_VIP].healthy is False


def test_the_serving_zone_is_the_first_ranked_one_the_probes_reached() -> None:
    f = Fixture(service("web", (zone("paris"), zone("frankfurt"), zone("virginia"))))
    web = f.services["web"]
    f.book.probed("web", "paris", None)
    f.book.probed("web", "frankfurt", 0.05)
    f.book.probed("web", "virginia", 0.01)
    assert serving_zone(web, f.chooser.order(web), f.book) == "virginia"
    assert serving_zone(web, [z for z in web.zones if z.zone == "paris"], f.book) is None

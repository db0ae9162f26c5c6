"""The Speaker against a stand-in ExaBGP (``fake_exabgp.py``: same process API, no BGP): acks,
refusals, missing acks, supervision and re-announcement, stop and the parent-death signal. The
real thing is in tests/integration/test_bgp_speaker.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bgp.backoff import Backoff
from bgp.commands import RouteAttributes
from bgp.process import Pidfd
from bgp.settings import BgpSettings, Neighbor
from bgp.speaker import ConfigInvalid, Speaker, SpeakerError
from meshgate.netns import process_alive, wait_until, wait_until_async

REPO = Path(__file__).resolve().parents[3]
SETTINGS = BgpSettings(
    local_asn=65000,
    router_id="192.0.2.10",
    hold_time=9,
    neighbors=(Neighbor("192.0.2.1", 65001), Neighbor("192.0.2.2", 65001), Neighbor("2001:db8::1", 65002)),
)
ATTRS = RouteAttributes(med=0, communities=("65000:1",))


@pytest.fixture
def exabgp(tmp_path: Path) -> Path:
    fake = tmp_path / "bin" / "exabgp"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\n" + (Path(__file__).with_name("fake_exabgp.py")).read_text())
    fake.chmod(0o755)
    return fake


class World:
    def __init__(self, workdir: Path, exabgp: Path) -> None:
        self.workdir = workdir
        self.exabgp = exabgp
        self.changes = 0

    def speaker(self, **kwargs: object) -> Speaker:
        def changed() -> None:
            self.changes += 1

        options: dict[str, object] = {
            "ack_timeout": 2.0,
            "connect_timeout": 10.0,
            "backoff": Backoff(initial=0.05, cap=0.1),
            **kwargs,
        }
        return Speaker(SETTINGS, self.workdir, exabgp=str(self.exabgp), on_change=changed, **options)  # type: ignore[arg-type]

    def fake(self, **options: object) -> None:
        self.exabgp.with_name("fake.json").write_text(json.dumps(options))

    def commands(self) -> list[str]:
        path = self.workdir / "commands.log"
        return path.read_text().splitlines() if path.exists() else []

    def helper_pid(self) -> int:
        return int((self.workdir / "fake-helper.pid").read_text())


@pytest.fixture
def world(tmp_path: Path, exabgp: Path) -> World:
    return World(tmp_path / "bgp", exabgp)


def exabgp_pid(speaker: Speaker) -> int:
    run = speaker._run
    assert run is not None
    return run.proc.pid


async def established(speaker: Speaker, count: int = 3) -> None:
    await wait_until_async(lambda: len(speaker.neighbors.established()) == count, 10.0, what="sessions up")


async def test_start_announce_withdraw_stop(world: World) -> None:
    speaker = world.speaker()
    await speaker.start()
    try:
        assert speaker.running
        assert speaker.restarts == 0
        await established(speaker)
        assert world.changes >= 4  # running, then each session
        await speaker.announce("203.0.113.10", ATTRS)
        await speaker.announce("2001:db8::10", ATTRS)
        assert world.commands() == [
            "neighbor 192.0.2.1 announce route 203.0.113.10/32 next-hop self med 0 community [65000:1]",
            "neighbor 192.0.2.2 announce route 203.0.113.10/32 next-hop self med 0 community [65000:1]",
            "neighbor 2001:db8::1 announce route 2001:db8::10/128 next-hop self med 0 community [65000:1]",
        ]
        assert speaker.announced == {"203.0.113.10/32": ATTRS, "2001:db8::10/128": ATTRS}
        await speaker.withdraw("2001:db8::10/128")
        assert world.commands()[-1] == "neighbor 2001:db8::1 withdraw route 2001:db8::10/128"
        assert speaker.announced == speaker.wanted == {"203.0.113.10/32": ATTRS}
        samples = [line for line in speaker.metric_lines() if not line.startswith("#")]
        assert "meshgate_bgp_speaker_up 1" in samples
        assert "meshgate_bgp_announced_routes 1" in samples
        assert 'meshgate_bgp_neighbor_up{neighbor="192.0.2.1",peer_asn="65001"} 1' in samples
        exabgp, helper = exabgp_pid(speaker), world.helper_pid()
        assert os.getpgid(exabgp) == exabgp  # its own process group
    finally:
        await speaker.stop()
    assert not speaker.running
    assert not process_alive(exabgp)
    assert not process_alive(helper)
    assert not (world.workdir / "api.sock").exists()
    assert [n.state for n in speaker.neighbors] == ["down", "down", "down"]
    assert speaker.announced == {}
    assert "meshgate_bgp_speaker_up 0" in speaker.metric_lines()
    await speaker.stop()  # idempotent


async def test_an_error_answer_raises_and_forgets_the_route(world: World) -> None:
    world.fake(answer="error")
    speaker = world.speaker()
    await speaker.start()
    try:
        await established(speaker)
        with pytest.raises(SpeakerError, match="ExaBGP answered 'error'"):
            await speaker.announce("203.0.113.10", ATTRS)
        assert speaker.wanted == {}
        assert speaker.announced == {}
        assert speaker.running  # a refusal is not a failure of ExaBGP
    finally:
        await speaker.stop()


async def test_a_route_refused_for_a_session_not_up_is_sent_when_it_comes_up(world: World) -> None:
    world.fake(up_after=1.0)
    speaker = world.speaker()
    await speaker.start()
    try:
        assert speaker.neighbors.established() == []
        await speaker.announce("203.0.113.10", ATTRS)  # refused by both: deferred, not an error
        await speaker.announce("203.0.113.11", ATTRS)
        await speaker.withdraw("203.0.113.11")  # deferred routes withdrawn are not sent later
        refused = world.commands()
        assert len(refused) == 6
        await established(speaker)
        announce = "neighbor {} announce route 203.0.113.10/32 next-hop self med 0 community [65000:1]"
        await wait_until_async(
            lambda: (
                world.commands()[len(refused) :]
                == [announce.format("192.0.2.1"), announce.format("192.0.2.2")]
            ),
            5.0,
            what="deferred routes sent",
        )
        assert speaker.announced == {"203.0.113.10/32": ATTRS}
    finally:
        await speaker.stop()


async def test_a_route_without_a_neighbor_of_its_family_is_refused(world: World, exabgp: Path) -> None:
    v4_only = BgpSettings(65000, "192.0.2.10", 9, (Neighbor("192.0.2.1", 65001),))
    speaker = Speaker(v4_only, world.workdir, exabgp=str(exabgp))
    await speaker.start()
    try:
        with pytest.raises(SpeakerError, match="no IPv6 neighbor"):
            await speaker.announce("2001:db8::10", ATTRS)
        with pytest.raises(ValueError, match="must be an IP prefix"):
            await speaker.announce("203.0.113.10\nshutdown", ATTRS)
        assert world.commands() == []
    finally:
        await speaker.stop()


async def test_commands_before_start_or_while_down_are_wishes(world: World) -> None:
    speaker = world.speaker()
    with pytest.raises(SpeakerError, match="not running"):
        await speaker.announce("203.0.113.10", ATTRS)
    assert speaker.wanted == {"203.0.113.10/32": ATTRS}
    await speaker.start()
    try:
        # handed to ExaBGP as it started, before start() returned
        assert speaker.announced == {"203.0.113.10/32": ATTRS}
        assert len(world.commands()) == 2
    finally:
        await speaker.stop()
    with pytest.raises(SpeakerError, match="not running"):
        await speaker.withdraw("203.0.113.10")
    assert speaker.wanted == {}


async def test_a_missing_ack_restarts_exabgp(world: World) -> None:
    world.fake(answer="silent")
    speaker = world.speaker(ack_timeout=0.5)
    await speaker.start()
    try:
        first = exabgp_pid(speaker)
        started = time.monotonic()
        with pytest.raises(SpeakerError, match="did not answer"):
            await speaker.announce("203.0.113.10", ATTRS)
        assert 0.5 <= time.monotonic() - started < 2.0
        world.fake(answer="done")
        await wait_until_async(lambda: speaker.running and speaker.restarts == 1, 10.0, what="restarted")
        assert exabgp_pid(speaker) != first
        assert not process_alive(first)
        assert speaker.announced == {"203.0.113.10/32": ATTRS}  # announced again by the new one
    finally:
        await speaker.stop()


@pytest.mark.parametrize("victim", ["exabgp", "helper"])
async def test_losing_exabgp_or_its_helper_restarts_it_and_announces_again(world: World, victim: str) -> None:
    speaker = world.speaker()
    await speaker.start()
    try:
        await established(speaker)
        await speaker.announce("203.0.113.10", ATTRS)
        first, helper = exabgp_pid(speaker), world.helper_pid()
        changes = world.changes
        os.kill(first if victim == "exabgp" else helper, signal.SIGKILL)
        await wait_until_async(lambda: not speaker.running, 5.0, what="noticed")
        assert world.changes > changes
        await wait_until_async(lambda: speaker.running, 10.0, what="restarted")
        await established(speaker)
        assert speaker.restarts == 1
        assert not process_alive(first)
        assert not process_alive(helper)
        assert (
            world.commands().count(
                "neighbor 192.0.2.1 announce route 203.0.113.10/32 next-hop self med 0 community [65000:1]"
            )
            == 2
        )
        assert all(n.flaps == 1 for n in speaker.neighbors)
    finally:
        await speaker.stop()


async def test_a_refused_configuration_starts_nothing(world: World) -> None:
    world.fake(validate="refuse")
    speaker = world.speaker()
    with pytest.raises(ConfigInvalid, match="fake refusal"):
        await speaker.start()
    assert not (world.workdir / "exabgp.log").exists()
    assert not (world.workdir / "api.sock").exists()
    await speaker.stop()


async def test_a_helper_that_never_connects_fails_the_start(world: World, tmp_path: Path) -> None:
    mute = tmp_path / "bin" / "exabgp-mute"
    mute.write_text(
        f"#!{sys.executable}\nimport sys, time\nif sys.argv[1] == 'server':\n    time.sleep(60)\n"
    )
    mute.chmod(0o755)
    speaker = Speaker(SETTINGS, world.workdir, exabgp=str(mute), connect_timeout=0.5)
    with pytest.raises(SpeakerError, match=r"did not connect within 0\.5s"):
        await speaker.start()
    assert not speaker.running
    assert not (world.workdir / "api.sock").exists()


async def test_an_exabgp_that_exits_at_once_fails_the_start(world: World, tmp_path: Path) -> None:
    dead = tmp_path / "bin" / "exabgp-dead"
    dead.write_text(
        f"#!{sys.executable}\nimport sys\nprint('cannot start')\nsys.exit(3 if sys.argv[1] == 'server' else 0)\n"
    )
    dead.chmod(0o755)
    speaker = Speaker(SETTINGS, world.workdir, exabgp=str(dead))
    with pytest.raises(SpeakerError, match="exited with 3 before its helper connected: cannot start"):
        await speaker.start()


async def test_no_exabgp(world: World) -> None:
    speaker = Speaker(SETTINGS, world.workdir, exabgp="/nonexistent/exabgp")
    with pytest.raises(SpeakerError, match="not found"):
        await speaker.start()


CONTROLLER = """
import asyncio, json, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from bgp.settings import BgpSettings, Neighbor
from bgp.speaker import Speaker

async def main():
    settings = BgpSettings(65000, "192.0.2.10", 9, (Neighbor("192.0.2.1", 65001),))
    speaker = Speaker(settings, Path({workdir!r}), exabgp={exabgp!r})
    await speaker.start()
    print(json.dumps({{"exabgp": speaker._run.proc.pid}}), flush=True)
    await asyncio.sleep(60)

if {uvloop!r}:
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_exabgp_and_its_helper_die_with_the_controller(world: World, tmp_path: Path, loop: str) -> None:
    script = tmp_path / "controller.py"
    script.write_text(
        textwrap.dedent(
            CONTROLLER.format(
                repo=str(REPO), workdir=str(world.workdir), exabgp=str(world.exabgp), uvloop=loop == "uvloop"
            )
        )
    )
    controller = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    children: list[Pidfd] = []
    try:
        assert controller.stdout is not None
        line = controller.stdout.readline()
        assert line, controller.stderr.read() if controller.stderr else ""
        exabgp = Pidfd(json.loads(line)["exabgp"])
        helper = Pidfd(world.helper_pid())
        children += [exabgp, helper]
        controller.kill()
        controller.wait()
        took = wait_until(lambda: exabgp.exited() and helper.exited(), 5.0, interval=0.005)
        print(f"{loop}: controller SIGKILL -> exabgp and helper gone in {took * 1000:.0f} ms")
        assert took < 1.0
    finally:
        for child in children:  # a failed test leaves nothing behind
            if not child.exited():
                child.kill()
            child.close()
        if controller.poll() is None:
            controller.kill()
        controller.wait()
        for stream in (controller.stdout, controller.stderr):
            if stream is not None:
                stream.close()

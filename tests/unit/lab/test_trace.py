"""Packet traces without root: probe tags, the sniffer's kernel filter (run on a small classic BPF
interpreter), probes built and decoded with scapy, switches and lost probes, the output, and an
agent without scapy."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgate.cli.lab_trace_command import render_trace
from meshgate.cli.lab_trace_command import trace as trace_command
from meshgate.lab.trace import (
    MAX_PROBES,
    Probe,
    Sighting,
    Switch,
    TraceError,
    TraceResult,
    TraceSession,
    decode_probe,
    default_via,
    encode_probe,
    find_switches,
)
from meshgate.lab.trace_agent import bpf_program, build_probe, load_scapy, probe_number

RUN = 0x5EED1234
VIP = "203.0.113.10"

# -- tags -----------------------------------------------------------------------------------------


def test_a_probe_carries_its_run_and_number() -> None:
    fields = encode_probe(RUN, 7)
    assert fields.payload == b"MGTR" + RUN.to_bytes(4, "big") + (7).to_bytes(4, "big")
    assert fields.seq == RUN + 7
    assert fields.ip_id == 7
    assert 20000 <= fields.sport < 60000
    assert {encode_probe(RUN, n).sport for n in range(100)} == {fields.sport}  # one flow per run
    assert decode_probe(RUN, fields.payload) == 7
    assert decode_probe(RUN, fields.payload + b"padding") == 7
    assert decode_probe(RUN + 1, fields.payload) is None  # another run's
    assert decode_probe(RUN, b"GET / HTTP/1.1\r\n") is None
    assert decode_probe(RUN, b"", fields.seq) == 7  # payload stripped: the sequence number
    assert decode_probe(RUN, b"", None) is None
    assert decode_probe(RUN, b"", RUN - 1) is None  # far out of range


def test_sequence_numbers_wrap() -> None:
    run = 0xFFFFFFF0
    fields = encode_probe(run, 100)
    assert fields.seq == 100 - 16
    assert decode_probe(run, b"", fields.seq) == 100
    assert encode_probe(run, 70000).ip_id == 70000 & 0xFFFF


def test_probe_numbers_are_bounded() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_probe(RUN, MAX_PROBES)
    with pytest.raises(ValueError, match="out of range"):
        encode_probe(RUN, -1)


# -- the sniffer's kernel filter ------------------------------------------------------------------


def run_bpf(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """The classic BPF instructions the filter uses, interpreted (the return value: bytes kept)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            a = struct.unpack("!I", packet[k : k + 4])[0]
        elif code == 0x30:  # ldb [k]
            a = packet[k]
        elif code == 0xB1:  # ldxb 4*([k]&0xf)
            x = 4 * (packet[k] & 0xF)
        elif code == 0x48:  # ldh [x+k]
            a = struct.unpack("!H", packet[x + k : x + k + 2])[0]
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def ip_packet(dst: str, protocol: int, dport: int, options: bytes = b"") -> bytes:
    ihl = (20 + len(options)) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        0,
        0,
        0,
        64,
        protocol,
        0,
        socket.inet_aton("10.0.0.1"),
        socket.inet_aton(dst),
    )
    return header + options + struct.pack("!HH", 40000, dport) + bytes(16)


def test_the_kernel_filter_passes_only_probes_to_the_vip_and_port() -> None:
    program = bpf_program(VIP, "tcp", 80)
    assert run_bpf(program, ip_packet(VIP, 6, 80)) > 0
    assert run_bpf(program, ip_packet(VIP, 6, 80, options=bytes(8))) > 0  # IP options
    assert run_bpf(program, ip_packet(VIP, 6, 443)) == 0
    assert run_bpf(program, ip_packet(VIP, 17, 80)) == 0
    assert run_bpf(program, ip_packet("203.0.113.11", 6, 80)) == 0
    udp = bpf_program(VIP, "udp", 53)
    assert run_bpf(udp, ip_packet(VIP, 17, 53)) > 0
    assert run_bpf(udp, ip_packet(VIP, 6, 53)) == 0


# -- probes with scapy ----------------------------------------------------------------------------


def test_probes_built_and_decoded_with_scapy() -> None:
    pytest.importorskip("scapy")
    scapy = load_scapy()
    syn = build_probe(scapy, RUN, 42, "10.0.0.1", VIP, "tcp", 80)
    assert probe_number(scapy, syn, RUN, "tcp") == 42
    assert probe_number(scapy, syn, RUN ^ 1, "tcp") is None  # another run (and source port)
    assert run_bpf(bpf_program(VIP, "tcp", 80), syn) > 0
    packet = scapy.IP(syn)
    assert packet[scapy.TCP].flags == "S"
    assert packet.id == 42
    assert packet[scapy.TCP].dport == 80

    # the source's RST to the edge's SYN-ACK has the probe's flow and seq + 1: not a probe
    rst = scapy.IP(src="10.0.0.1", dst=VIP) / scapy.TCP(
        sport=encode_probe(RUN, 0).sport, dport=80, flags="R", seq=encode_probe(RUN, 42).seq + 1
    )
    assert probe_number(scapy, bytes(rst), RUN, "tcp") is None
    stripped = scapy.IP(src="10.0.0.1", dst=VIP) / scapy.TCP(
        sport=encode_probe(RUN, 0).sport, dport=80, flags="S", seq=encode_probe(RUN, 9).seq
    )
    assert probe_number(scapy, bytes(stripped), RUN, "tcp") == 9

    datagram = build_probe(scapy, RUN, 3, "10.0.0.1", VIP, "udp", 53)
    assert probe_number(scapy, datagram, RUN, "udp") == 3
    assert probe_number(scapy, datagram, RUN, "tcp") is None


def test_an_agent_without_scapy_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['scapy'] = None\n"
        "from meshgate.lab.trace_agent import main\n"
        "raise SystemExit(main(['send', '--run=1', '--dst=203.0.113.10', '--port=80']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3
    (line,) = done.stdout.splitlines()
    event = json.loads(line)
    assert event["event"] == "error"
    assert event["message"].startswith("scapy is not installed (pip install 'meshgate[lab]')")


def test_the_trace_module_does_not_import_scapy() -> None:
    code = "import sys, meshgate.lab.trace, meshgate.cli.lab_trace_command; print('scapy' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


# -- results --------------------------------------------------------------------------------------

T0 = 1_700_000_000.0


def probe(number: int, node: str | None, *, error: str | None = None, interface: str = "eth0") -> Probe:
    sent = T0 + number * 0.01
    seen = () if node is None else (Sighting(node, interface, sent + 0.0002),)
    return Probe(number, sent, error, seen)


def result(*probes: Probe) -> TraceResult:
    return TraceResult(RUN, "client", VIP, 80, "tcp", ("edge1", "edge2"), probes, interval=0.01)


def test_a_steady_path_has_no_switch() -> None:
    steady = result(*(probe(n, "edge1") for n in range(5)))
    assert steady.counts == {"edge1": 5}
    assert steady.lost == ()
    assert steady.switches == ()
    assert steady.started == T0


def test_a_failover_is_a_switch_with_the_probes_lost_meanwhile() -> None:
    probes = [probe(n, "edge1") for n in range(3)] + [probe(n, None) for n in (3, 4)]
    probes += [probe(5, None, error="Network is unreachable")] + [probe(n, "edge2") for n in (6, 7)]
    failover = result(*probes)
    assert failover.counts == {"edge1": 3, "edge2": 2}
    assert failover.lost == (3, 4)
    assert failover.unsent == (5,)
    (switch,) = failover.switches
    assert switch == Switch("edge1", "edge2", 2, T0 + 0.02 + 0.0002, 6, T0 + 0.06 + 0.0002, lost=3)
    assert switch.seconds == pytest.approx(0.04)


def test_switches_back_and_forth_and_losses_outside_a_switch() -> None:
    nodes = [None, "edge1", "edge2", None, "edge2", "edge1", None]
    flapping = result(*(probe(n, node) for n, node in enumerate(nodes)))
    assert [(s.old, s.new, s.last_old, s.first_new, s.lost) for s in flapping.switches] == [
        ("edge1", "edge2", 1, 2, 0),
        ("edge2", "edge1", 4, 5, 0),
    ]
    assert flapping.lost == (0, 3, 6)


def test_a_probe_reached_the_last_node_that_saw_it() -> None:
    routed = Probe(
        0, T0, None, (Sighting("router", "eth0", T0 + 0.0001), Sighting("edge1", "eth0", T0 + 0.0002))
    )
    assert routed.reached == Sighting("edge1", "eth0", T0 + 0.0002)
    assert result(routed).counts == {"edge1": 1}
    assert find_switches([routed, probe(1, "edge1")]) == ()


def test_the_json() -> None:
    probes = [
        probe(0, "edge1"),
        probe(1, None),
        probe(2, None, error="Network is unreachable"),
        probe(3, "edge2"),
    ]
    document = result(*probes).to_json()
    assert document["run"] == "5eed1234"
    assert (document["from"], document["to"], document["port"], document["protocol"]) == (
        "client",
        VIP,
        80,
        "tcp",
    )
    assert document["probes"][0] == {
        "probe": 0, "sent": 0.0, "error": None, "node": "edge1", "interface": "eth0", "seen": 0.0002,
        "sightings": [{"node": "edge1", "interface": "eth0", "time": 0.0002}],
    }  # fmt: skip
    assert document["probes"][2]["error"] == "Network is unreachable"
    assert document["counts"] == {"edge1": 1, "edge2": 1}
    assert (document["lost"], document["unsent"]) == ([1], [2])
    assert document["switches"] == [
        {"from": "edge1", "to": "edge2", "seconds": 0.03, "lastOld": {"probe": 0, "time": 0.0002},
         "firstNew": {"probe": 3, "time": 0.0302}, "lost": 2},
    ]  # fmt: skip
    json.dumps(document)


def test_the_text_output() -> None:
    probes = [probe(n, "edge1") for n in range(3)] + [probe(3, None)] + [probe(n, "edge2") for n in (4, 5)]
    text = render_trace(result(*probes)).splitlines()
    assert text == [
        "trace 5eed1234: client -> 203.0.113.10:80/tcp, 6 probes every 10ms, watching edge1, edge2",
        "PROBES  SENT              NODE   INTERFACE",
        "#0-#2   +0.000s..+0.020s  edge1  eth0",
        "#3      +0.030s           lost",
        "#4-#5   +0.040s..+0.050s  edge2  eth0",
        "edge1: 3  edge2: 2  lost: 1",
        "lost probes: #3",
        "switch edge1 -> edge2: 0.020s (last at edge1 #2 +0.020s, first at edge2 #4 +0.040s, 1 lost between)",
    ]
    per_probe = render_trace(result(probe(0, "edge1"), probe(1, None, error="Network is unreachable")), True)
    assert per_probe.splitlines()[1:4] == [
        "PROBE  SENT     NODE      INTERFACE               RECEIVED",
        "#0     +0.000s  edge1     eth0                    +0.000s",
        "#1     +0.010s  not sent  Network is unreachable  -",
    ]
    assert per_probe.splitlines()[4] == "edge1: 1  lost: 0  not sent: 1"


# -- sessions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeNode:
    netns: str
    labels: Mapping[str, str] = field(default_factory=dict)


class FakeLab:
    def __init__(self) -> None:
        self.nodes = {
            "client": FakeNode("ns-client"),
            "router": FakeNode("ns-router"),
            "edge-eu": FakeNode("ns-eu", {"role": "edge"}),
            "edge-us": FakeNode("ns-us", {"role": "edge"}),
        }

    def netns(self, node: str) -> str:
        return self.nodes[node].netns

    def exec(
        self, node: str, argv: list[str], *, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        raise AssertionError("a trace runs no command through exec")


def test_the_nodes_watched_by_default() -> None:
    lab = FakeLab()
    assert default_via(lab.nodes, "client") == ["edge-eu", "edge-us"]
    assert default_via(lab.nodes, "edge-eu") == ["edge-us"]
    plain = {name: FakeNode(name) for name in ("a", "b", "c")}
    assert default_via(plain, "b") == ["a", "c"]
    assert TraceSession(lab, "client", VIP, 80).via == ("edge-eu", "edge-us")
    assert TraceSession(lab, "client", VIP, 80, ["router", "edge-eu", "router"]).via == ("router", "edge-eu")


def test_a_session_refuses_what_it_cannot_trace() -> None:
    lab = FakeLab()
    with pytest.raises(TraceError) as caught:
        TraceSession(lab, "nobody", "2001:db8::1", 0, ["edge-xx"], protocol="icmp")
    assert str(caught.value) == (
        "no node 'nobody' in this lab; no node 'edge-xx' in this lab; 2001:db8::1: traces probe IPv4 "
        "addresses only; port 0 is not 1-65535; protocol 'icmp' is not one of tcp, udp"
    )
    with pytest.raises(TraceError, match=r"'www\.example\.test' is not an IP address"):
        TraceSession(lab, "client", "www.example.test", 80)
    with pytest.raises(TraceError, match="the session is not started"):
        TraceSession(lab, "client", VIP, 80).send(10, 0.1)


def test_the_command_checks_its_options_before_looking_for_the_lab(tmp_path: Path) -> None:
    base = [str(tmp_path), "--from", "client", "--to", VIP]
    bad_interval = CliRunner().invoke(trace_command, [*base, "--interval", "10"])
    assert bad_interval.exit_code == 2
    assert "'10' is not a duration (a number and a unit: 500ms, 30s, 2m)" in bad_interval.output
    zero = CliRunner().invoke(trace_command, [*base, "--interval", "0s"])
    assert "must be more than 0" in zero.output
    assert CliRunner().invoke(trace_command, [*base, "--count", "0"]).exit_code == 2
    assert CliRunner().invoke(trace_command, [*base, "--protocol", "icmp"]).exit_code == 2
    assert CliRunner().invoke(trace_command, [str(tmp_path), "--to", VIP]).exit_code == 2  # --from

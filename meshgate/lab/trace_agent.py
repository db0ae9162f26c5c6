"""The process ``meshgate.lab.trace`` runs inside a node's namespace (``ip netns exec NS python
-m meshgate.lab.trace_agent sniff|send ...``): it sends tagged probes or reports the ones that
arrive, as JSON lines on stdout.

Lines: ``{"event": "ready"}`` once set up; ``{"event": "sent", "probe": N, "time": T}`` or
``{"event": "unsent", "probe": N, "time": T, "error": "..."}`` (send); ``{"event": "seen",
"probe": N, "interface": "eth0", "time": T}`` (sniff; T is the kernel's receive time);
``{"event": "done", ...}`` at the end; ``{"event": "error", "message": "..."}`` when it cannot
work. Times are wall-clock seconds (one clock for every namespace of the machine). The agent
stops at the end of its stdin or on SIGTERM; a sniffer reports what it already received first.

scapy (GPL-2.0-only, the ``lab`` extra) builds and decodes the packets and is imported here only.
The sniffer is one packet socket for every interface of the namespace (incoming packets only,
links that go down and up again or appear later included), with a kernel filter that passes only
IPv4 packets to the VIP and port.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final

from meshgate.lab.trace import PROTOCOLS, SCAPY_MISSING, decode_probe, encode_probe

SOL_SOCKET: Final = 1
SO_ATTACH_FILTER: Final = 26
SO_TIMESTAMPNS: Final = 35
ETH_P_IP: Final = 0x0800
PACKET_OUTGOING: Final = 4
RECEIVE_BUFFER: Final = 4 << 20
SNAPLEN: Final = 2048
EXIT_UNAVAILABLE: Final = 3
TCP_SYN: Final = 0x02
#: SYN, RST, ACK: a probe is a SYN alone
TCP_FLAGS: Final = 0x16


class _Stop(Exception):
    """SIGTERM: finish up."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def load_scapy() -> Any:
    """scapy's IP, TCP, UDP and Raw (a namespace), or exit with an error line."""
    try:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.packet import Raw
    except ImportError as exc:
        emit("error", message=f"{SCAPY_MISSING} (pip install 'meshgate[lab]'): {exc}")
        raise SystemExit(EXIT_UNAVAILABLE) from None
    return argparse.Namespace(IP=IP, TCP=TCP, UDP=UDP, Raw=Raw)


# -- sniffing -------------------------------------------------------------------------------------


def bpf_program(dst: str, protocol: str, port: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program (for a SOCK_DGRAM packet socket: offset 0 is the IP header) that
    passes IPv4 packets to ``dst`` with ``protocol`` and destination ``port``, and nothing else."""
    vip = int.from_bytes(socket.inet_aton(dst), "big")
    number = PROTOCOLS[protocol]
    return [
        (0x20, 0, 0, 16),  # ld [16]             destination address
        (0x15, 0, 6, vip),  # jeq #vip            else drop
        (0x30, 0, 0, 9),  # ldb [9]             protocol
        (0x15, 0, 4, number),  # jeq #protocol       else drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)    header length
        (0x48, 0, 0, 2),  # ldh [x+2]           destination port
        (0x15, 0, 1, port),  # jeq #port           else drop
        (0x06, 0, 0, SNAPLEN),  # ret #snaplen
        (0x06, 0, 0, 0),  # ret #0
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _open_sniffer(dst: str, protocol: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    sock.setsockopt(SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _attach_filter(sock, bpf_program(dst, protocol, port))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # what arrived before the filter was attached
        while True:
            sock.recv(SNAPLEN)
    return sock


def _received(sock: socket.socket) -> Iterator[tuple[bytes, str, float]]:
    """(IP packet, interface, kernel receive time) of what is queued, incoming packets only."""
    while True:
        try:
            data, ancillary, _flags, address = sock.recvmsg(SNAPLEN, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                continue  # a link went away under us: the socket stays usable
            raise
        if address[2] == PACKET_OUTGOING:
            continue
        stamp = time.time()
        for level, kind, value in ancillary:
            if level == SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                stamp = seconds + nanoseconds / 1e9
        yield data, str(address[0]), stamp


def probe_number(scapy: Any, data: bytes, run: int, protocol: str) -> int | None:
    """The number of the probe of ``run`` in IP packet ``data``, None if it is not one (another
    flow, or a TCP segment other than a SYN alone: the source's RST to an edge's SYN-ACK, say)."""
    layer = scapy.TCP if protocol == "tcp" else scapy.UDP
    packet = scapy.IP(data)
    if layer not in packet:
        return None
    segment = packet[layer]
    if segment.sport != encode_probe(run, 0).sport:
        return None
    if protocol == "tcp" and int(segment.flags) & TCP_FLAGS != TCP_SYN:
        return None
    seq = int(segment.seq) if protocol == "tcp" else None
    return decode_probe(run, bytes(segment.payload), seq)


def sniff(run: int, dst: str, protocol: str, port: int) -> int:
    scapy = load_scapy()
    sock = _open_sniffer(dst, protocol, port)
    reported = 0

    def report_queued() -> None:
        nonlocal reported
        for data, interface, stamp in _received(sock):
            probe = probe_number(scapy, data, run, protocol)
            if probe is not None:
                reported += 1
                emit("seen", probe=probe, interface=interface, time=stamp)

    emit("ready")
    stdin = sys.stdin.fileno()
    try:
        while True:
            readable, _, _ = select.select([sock, stdin], [], [])
            if sock in readable:
                report_queued()
            if stdin in readable and not os.read(stdin, 4096):
                break
    except _Stop:
        pass
    report_queued()  # what the kernel already received
    sock.close()
    emit("done", seen=reported)
    return 0


# -- sending ------------------------------------------------------------------------------------


def _source_for(dst: str, port: int) -> str:
    """The address the kernel picks towards ``dst`` now (routes may change during a trace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, port))
        return str(probe.getsockname()[0])


def build_probe(scapy: Any, run: int, number: int, src: str, dst: str, protocol: str, port: int) -> bytes:
    """Probe ``number`` of ``run`` as an IP packet (checksums filled in): a TCP SYN or a UDP
    datagram whose payload, TCP sequence number and IP ID carry the tag."""
    fields = encode_probe(run, number)
    ip = scapy.IP(src=src, dst=dst, id=fields.ip_id, ttl=64)
    if protocol == "tcp":
        segment = scapy.TCP(sport=fields.sport, dport=port, flags="S", seq=fields.seq, window=64240)
    else:
        segment = scapy.UDP(sport=fields.sport, dport=port)
    return bytes(ip / segment / scapy.Raw(fields.payload))


def send(run: int, dst: str, protocol: str, port: int, count: int, interval: float, first: int) -> int:
    scapy = load_scapy()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    emit("ready")
    stdin = sys.stdin.fileno()
    start = time.monotonic()
    sent = 0
    try:
        index = 0
        while count == 0 or index < count:
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                readable, _, _ = select.select([stdin], [], [], delay)
                if readable and not os.read(stdin, 4096):
                    break
            number = first + index
            try:
                packet = build_probe(scapy, run, number, _source_for(dst, port), dst, protocol, port)
                stamp = time.time()
                raw.sendto(packet, (dst, 0))
            except OSError as exc:
                emit("unsent", probe=number, time=time.time(), error=exc.strerror or str(exc))
            else:
                sent += 1
                emit("sent", probe=number, time=stamp)
            index += 1
    except _Stop:
        pass
    raw.close()
    emit("done", sent=sent)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshgate.lab.trace_agent")
    parser.add_argument("mode", choices=["sniff", "send"])
    parser.add_argument("--run", required=True, type=lambda text: int(text, 16), help="run tag (hex)")
    parser.add_argument("--dst", required=True, help="the IPv4 address probed (the VIP)")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="tcp")
    parser.add_argument("--count", type=int, default=1, help="probes to send (0: until stopped)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--first", type=int, default=0, help="number of the first probe")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.mode == "sniff":
            return sniff(args.run, args.dst, args.protocol, args.port)
        return send(args.run, args.dst, args.protocol, args.port, args.count, args.interval, args.first)
    except _Stop:
        return 0
    except OSError as exc:
        emit("error", message=f"{args.mode}: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

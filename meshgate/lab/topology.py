"""Read a containerlab topology file: environment expansion, YAML, every violation with its
field path, and the node > group > kind > defaults merge, into a ``model.Topology``.

The machine is reached only through a ``Host`` (does a path exist, a file's text, the
environment, the home directory), so this is tested without one.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

from meshgate.lab import fields as f
from meshgate.lab.envsubst import expand
from meshgate.lab.errors import TopologyInvalid, Violation
from meshgate.lab.model import (
    DEFAULT_LINK_MTU,
    DEFAULT_MGMT_NETWORK,
    DEFAULT_MGMT_SUBNET,
    DEFAULT_PREFIX,
    Bind,
    Endpoint,
    Link,
    Mgmt,
    NodeSpec,
    Topology,
)
from meshgate.lab.node_fields import (
    Level,
    first_scalar,
    ignored_notes,
    merge_stages,
    merged_list,
    merged_map,
    parse_bind,
    read_level,
)

TOPOLOGY_FILE: Final = "topology.clab.yml"
CLAB_DIR_VAR: Final = "__clabDir__"
NODE_DIR_VAR: Final = "__clabNodeDir__"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-._]*")
_PREFIX = re.compile(r"|__lab-name|[a-zA-Z0-9][a-zA-Z0-9-._]*")
_NODE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-._|]*")
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC = re.compile(r"(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}")
TOP_KEYS: Final = frozenset({"name", "prefix", "mgmt", "topology", "settings", "debug"})
MGMT_KEYS: Final = frozenset({"network", "bridge", "ipv4-subnet", "ipv4-gw", "ipv4-range", "mtu"})
MGMT_IGNORED: Final = frozenset({"external-access", "skip-when-unused", "driver-opts"})
MGMT_REFUSED: Final = frozenset({"ipv6-subnet", "ipv6-gw", "ipv6-range"})
#: endpoint "node" names that mean another link type in containerlab's short form
SPECIAL_ENDPOINTS: Final = {"host": "host", "mgmt-net": "mgmt-net", "macvlan": "macvlan"}


class Host(Protocol):
    """What reading a topology needs from the machine."""

    def exists(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str: ...

    @property
    def environ(self) -> Mapping[str, str]: ...

    @property
    def home(self) -> str: ...


@dataclass(frozen=True)
class LocalHost:
    """This machine."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    home: str = field(default_factory=lambda: str(Path.home()))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_text(self, path: str) -> str:
        return Path(path).read_text()


def topology_file(lab_dir: Path) -> Path:
    """``DIR/topology.clab.yml`` (or the one ``*.clab.yml`` in DIR, or DIR when it is a file)."""
    lab_dir = Path(lab_dir)
    if lab_dir.is_file():
        return lab_dir.absolute()
    default = lab_dir / TOPOLOGY_FILE
    if default.is_file():
        return default.absolute()
    candidates = sorted([*lab_dir.glob("*.clab.yml"), *lab_dir.glob("*.clab.yaml")])
    if len(candidates) == 1:
        return candidates[0].absolute()
    raise FileNotFoundError(f"no {TOPOLOGY_FILE} in {lab_dir}" + (
        f" (several *.clab.yml: {', '.join(c.name for c in candidates)})" if candidates else ""))  # fmt: skip


def lab_directory(directory: str, name: str) -> str:
    """containerlab's lab directory: ``clab-<name>`` beside the topology file."""
    return os.path.join(directory, f"clab-{name}")


def read_topology(lab_dir: Path, host: Host | None = None) -> Topology:
    """The topology of ``lab_dir``; ``TopologyInvalid`` lists every problem."""
    path = topology_file(lab_dir)
    return parse_topology(path.read_text(), file=str(path), host=host or LocalHost())


def parse_topology(text: str, *, file: str, host: Host) -> Topology:
    report = f.Problems()
    directory = os.path.dirname(os.path.abspath(file))
    try:
        raw = yaml.safe_load(expand(text, host.environ))
    except yaml.YAMLError as exc:
        raise TopologyInvalid(file, [Violation("", f"not valid YAML: {exc}")]) from None
    reader = _Reader(report, host, directory)
    topology = reader.read(raw, file)
    if report or topology is None:
        raise TopologyInvalid(file, report.found)
    return topology


class _Reader:
    def __init__(self, report: f.Problems, host: Host, directory: str) -> None:
        self.report = report
        self.host = host
        self.directory = directory
        self.notes: list[str] = []
        #: every node named in the file, valid or not (a link to an invalid node is not reported twice)
        self.declared: set[str] = set()

    def read(self, raw: Any, file: str) -> Topology | None:
        report = self.report
        top = f.mapping(raw, "", report)
        if top is None:
            return None
        for key in top:
            if key not in TOP_KEYS:
                report(key, "unknown field")
            elif key in ("settings", "debug"):
                self.notes.append(f"{key}: accepted, without effect in meshgate lab")
        name = top.get("name")
        if name is None:
            report("name", "is required")
        elif f.string(name, "name", report) is not None and not _NAME.fullmatch(name):
            report("name", f"{name!r} must start with a letter or digit and hold only letters, digits, - . _")
        prefix = top.get("prefix", DEFAULT_PREFIX)
        if f.string(prefix, "prefix", report) is not None and not _PREFIX.fullmatch(prefix):
            report("prefix", f"{prefix!r} must be empty, __lab-name, or letters, digits, - . _")
        mgmt = self._mgmt(top.get("mgmt"))
        body = top.get("topology")
        if body is None:
            report("topology", "is required")
            return None
        topo = f.mapping(body, "topology", report)
        if topo is None:
            return None
        f.unknown_keys(topo, {"nodes", "defaults", "kinds", "groups", "links"}, "topology", report)
        levels = self._levels(topo)
        nodes = self._nodes(topo, levels, str(name) if isinstance(name, str) else "", mgmt)
        links = self._links(topo.get("links"), nodes)
        self.notes += ignored_notes({path: level for path, level in levels.items()})
        if not isinstance(name, str) or not isinstance(prefix, str) or mgmt is None:
            return None
        return Topology(name=name, prefix=prefix, mgmt=mgmt, nodes=nodes, links=tuple(links), file=file,
                        directory=self.directory, notes=tuple(self.notes))  # fmt: skip

    # -- management network ---------------------------------------------------------------------

    def _mgmt(self, raw: Any) -> Mgmt | None:
        report = self.report
        found = f.mapping(raw, "mgmt", report)
        if found is None:
            return None
        for key in found:
            if key in MGMT_REFUSED:
                report(f"mgmt.{key}", "not supported by meshgate lab (the management network is IPv4 only)")
            elif key in MGMT_IGNORED:
                self.notes.append(f"mgmt.{key}: accepted, without effect in meshgate lab")
            elif key not in MGMT_KEYS:
                report(f"mgmt.{key}", "unknown field")
        network = f.string(found.get("network", DEFAULT_MGMT_NETWORK), "mgmt.network", report)
        bridge = f.string(found.get("bridge", ""), "mgmt.bridge", report)
        if bridge and not _IFNAME.fullmatch(bridge):
            report("mgmt.bridge", f"{bridge!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
        subnet_text = f.string(found.get("ipv4-subnet", DEFAULT_MGMT_SUBNET), "mgmt.ipv4-subnet", report)
        if subnet_text == "auto":
            subnet_text = DEFAULT_MGMT_SUBNET
        subnet = None
        if subnet_text is not None:
            try:
                subnet = ipaddress.IPv4Network(subnet_text, strict=False)
                if subnet.prefixlen > 29:
                    report("mgmt.ipv4-subnet", f"{subnet_text} is too small (a /29 at most)")
                    subnet = None
            except ValueError:
                report("mgmt.ipv4-subnet", f"{subnet_text!r} is not an IPv4 subnet (a.b.c.d/len)")
        gateway = None
        if "ipv4-gw" in found:
            gateway = f.ipv4_address(found["ipv4-gw"], "mgmt.ipv4-gw", report)
            if gateway is not None and subnet is not None and ipaddress.IPv4Address(gateway) not in subnet:
                report("mgmt.ipv4-gw", f"{gateway} is not in {subnet}")
        address_range = None
        if "ipv4-range" in found:
            address_range = f.string(found["ipv4-range"], "mgmt.ipv4-range", report)
            try:
                if address_range is not None:
                    within = ipaddress.IPv4Network(address_range, strict=False)
                    if subnet is not None and not within.subnet_of(subnet):
                        report("mgmt.ipv4-range", f"{address_range} is not within {subnet}")
            except ValueError:
                report("mgmt.ipv4-range", f"{address_range!r} is not an IPv4 subnet (a.b.c.d/len)")
        mtu = (
            f.integer(found["mtu"], "mgmt.mtu", report, minimum=68, maximum=65535) if "mtu" in found else None
        )
        if network is None or bridge is None or subnet is None:
            return None
        return Mgmt(
            network=network, bridge=bridge, subnet=str(subnet), gateway=gateway, range=address_range, mtu=mtu
        )

    # -- nodes ----------------------------------------------------------------------------------

    def _levels(self, topo: Mapping[str, Any]) -> dict[str, Level]:
        levels: dict[str, Level] = {}
        if "defaults" in topo:
            levels["defaults"] = read_level(
                topo["defaults"], "topology.defaults", self.report, node_level=False
            )
        for section in ("kinds", "groups"):
            found = f.mapping(topo.get(section), f"topology.{section}", self.report)
            for key, raw in (found or {}).items():
                levels[f"{section}.{key}"] = read_level(
                    raw, f"topology.{section}.{key}", self.report, node_level=False
                )
        return levels

    def _nodes(
        self, topo: Mapping[str, Any], levels: dict[str, Level], lab: str, mgmt: Mgmt | None
    ) -> dict[str, NodeSpec]:
        report = self.report
        if "nodes" not in topo:
            report("topology.nodes", "is required")
            return {}
        found = f.mapping(topo["nodes"], "topology.nodes", report)
        self.declared = set(found or {})
        nodes: dict[str, NodeSpec] = {}
        addresses: dict[str, str] = {}
        for name, raw in (found or {}).items():
            path = f"topology.nodes.{name}"
            if not _NODE_NAME.fullmatch(name):
                report(
                    path,
                    "a node name must start with a letter or digit and hold only letters, digits, - . _ |",
                )
                continue
            own = read_level(raw, path, report, node_level=True)
            levels[f"nodes.{name}"] = own
            node = self._node(name, own, levels, lab, mgmt)
            if node is None:
                continue
            nodes[name] = node
            if node.mgmt_ipv4 is not None:
                if node.mgmt_ipv4 in addresses:
                    report(
                        f"{path}.mgmt-ipv4",
                        f"{node.mgmt_ipv4} is also the address of node {addresses[node.mgmt_ipv4]}",
                    )
                addresses[node.mgmt_ipv4] = name
        for name, node in nodes.items():
            for stage, config in node.stages.items():
                for index, wait in enumerate(config.wait_for):
                    if wait.node not in nodes and wait.node not in (found or {}):
                        report(
                            f"topology.nodes.{name}.stages.{stage}.wait-for[{index}].node",
                            f"no node {wait.node!r} in the topology",
                        )
        return nodes

    def _node(
        self, name: str, own: Level, levels: dict[str, Level], lab: str, mgmt: Mgmt | None
    ) -> NodeSpec | None:
        report = self.report
        path = f"topology.nodes.{name}"
        defaults = levels.get("defaults", Level("topology.defaults"))
        group_value = first_scalar([defaults, own], "group")
        group = str(group_value[0]) if group_value else ""
        group_level = levels.get(f"groups.{group}") if group else None
        if group and group_level is None:
            report(f"{group_value[1] if group_value else path}", f"no group {group!r} in topology.groups")
        kind_value = first_scalar([defaults, *([group_level] if group_level else []), own], "kind")
        if kind_value is None:
            report(f"{path}.kind", "no kind (set kind on the node, its group, or topology.defaults)")
            return None
        kind = str(kind_value[0]).lower()
        if kind != "linux":
            report(kind_value[1] if kind_value[1].startswith(path) else f"{path}.kind",
                   f"kind {kind!r} is not supported: meshgate lab runs nodes of kind linux only")  # fmt: skip
            return None
        chain = [defaults]
        if f"kinds.{kind}" in levels:
            chain.append(levels[f"kinds.{kind}"])
        if group_level is not None:
            chain.append(group_level)
        chain.append(own)

        def scalar(key: str, default: Any = None) -> Any:
            found = first_scalar(chain, key)
            return default if found is None else found[0]

        entrypoint = shlex.split(scalar("entrypoint", "") or "")
        cmd_text = scalar("cmd", "") or ""
        cmd = tuple(entrypoint + shlex.split(cmd_text)) if (entrypoint or cmd_text.strip()) else ()
        execs = merged_list(chain, "exec")
        binds = self._binds(name, chain, lab)
        env = self._env_files(chain)
        env.update(merged_map(chain, "env"))
        stages = merge_stages(chain)
        mgmt_ipv4 = scalar("mgmt-ipv4")
        network_mode = scalar("network-mode", "bridge")
        if mgmt_ipv4 is not None and mgmt is not None:
            subnet = ipaddress.IPv4Network(mgmt.subnet)
            address = ipaddress.IPv4Address(mgmt_ipv4)
            gateway = ipaddress.IPv4Address(mgmt.gateway) if mgmt.gateway else subnet.network_address + 1
            if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
                report(
                    f"{path}.mgmt-ipv4",
                    f"{mgmt_ipv4} is not a host address of the management subnet {subnet}",
                )
            elif address == gateway:
                report(f"{path}.mgmt-ipv4", f"{mgmt_ipv4} is the management network's gateway")
        if mgmt_ipv4 is not None and network_mode == "none":
            report(f"{path}.mgmt-ipv4", "a node with network-mode none has no management interface")
        return NodeSpec(
            name=name,
            kind=kind,
            image=scalar("image"),
            group=group,
            type=scalar("type", "") or "",
            cmd=cmd,
            exec=tuple(text for text, _ in execs),
            exec_argv=tuple(tuple(shlex.split(text)) for text, _ in execs),
            binds=binds,
            tmpfs=merged_map(chain, "tmpfs"),
            env=env,
            labels=merged_map(chain, "labels"),
            mgmt_ipv4=mgmt_ipv4,
            network_mode=network_mode,
            healthcheck=scalar("healthcheck"),
            stages=stages,
            restart_policy=scalar("restart-policy", "always"),
            startup_delay=float(scalar("startup-delay", 0)),
            sysctls=merged_map(chain, "sysctls"),
            hostname=scalar("hostname", "") or "",
        )

    def _binds(self, node: str, chain: list[Level], lab: str) -> tuple[Bind, ...]:
        """Merged by target (the most specific level wins), sources resolved: magic variables,
        ``~``, relative to the topology directory; each must exist."""
        clab_dir = lab_directory(self.directory, lab)
        node_dir = os.path.join(clab_dir, node)
        by_target: dict[str, Bind] = {}
        for text, path in merged_list(chain, "binds"):
            parsed = parse_bind(text, path, self.report)
            if parsed is None:
                continue
            source, target, read_only = parsed
            source = source.replace(CLAB_DIR_VAR, clab_dir).replace(NODE_DIR_VAR, node_dir)
            if source == "~" or source.startswith("~/"):
                source = self.host.home + source[1:]
            source = os.path.normpath(os.path.join(self.directory, source))
            # the lab and node directories are made by `up`
            if source not in (clab_dir, node_dir) and not self.host.exists(source):
                self.report(path, f"host path {source} does not exist (for node {node})")
                continue
            by_target[os.path.normpath(target)] = Bind(
                source=source, target=os.path.normpath(target), read_only=read_only
            )
        return tuple(by_target.values())

    def _env_files(self, chain: list[Level]) -> dict[str, str]:
        env: dict[str, str] = {}
        for text, path in merged_list(chain, "env-files"):
            file = text if os.path.isabs(text) else os.path.join(self.directory, text)
            if text.startswith("~/"):
                file = self.host.home + text[1:]
            try:
                content = self.host.read_text(file)
            except OSError as exc:
                self.report(path, f"cannot read {file}: {exc.strerror or exc}")
                continue
            for number, line in enumerate(content.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    self.report(path, f"{file}:{number}: not KEY=VALUE")
                    continue
                env[key.strip()] = value
        return env

    # -- links ----------------------------------------------------------------------------------

    def _links(self, raw: Any, nodes: dict[str, NodeSpec]) -> list[Link]:
        report = self.report
        if raw is None:
            return []
        if not isinstance(raw, list):
            report("topology.links", f"must be a list, not {f.type_name(raw)}")
            return []
        links: list[Link] = []
        used: dict[tuple[str, str], str] = {}
        for index, item in enumerate(raw):
            path = f"topology.links[{index}]"
            body = f.mapping(item, path, report)
            if body is None:
                continue
            link_type = body.get("type", "veth" if "endpoints" in body else None)
            if link_type != "veth":
                report(path, f"link type {link_type!r} is not supported by meshgate lab (only veth links between nodes)"
                       if link_type is not None else "needs endpoints (or a type)")  # fmt: skip
                continue
            typed = "type" in body
            known = (
                {"type", "endpoints", "mtu", "vars", "labels"}
                if typed
                else {"endpoints", "mtu", "ipv4", "ipv6", "vars"}
            )
            f.unknown_keys(body, known, path, report)
            endpoints = self._endpoints(body, path, typed, nodes)
            mtu = (
                f.integer(body["mtu"], f"{path}.mtu", report, minimum=68, maximum=65535)
                if "mtu" in body
                else DEFAULT_LINK_MTU
            )
            if endpoints is None or mtu is None:
                continue
            ok = True
            for position, endpoint in enumerate(endpoints):
                key = (endpoint.node, endpoint.interface)
                where = f"{path}.endpoints[{position}]"
                if key in used:
                    report(
                        where, f"{endpoint.node}:{endpoint.interface} is already an endpoint of {used[key]}"
                    )
                    ok = False
                used[key] = path
            if ok:
                links.append(Link(a=endpoints[0], b=endpoints[1], mtu=mtu))
        return links

    def _endpoints(
        self, body: Mapping[str, Any], path: str, typed: bool, nodes: dict[str, NodeSpec]
    ) -> list[Endpoint] | None:
        report = self.report
        raw = body.get("endpoints")
        where = f"{path}.endpoints"
        if not isinstance(raw, list) or len(raw) != 2:
            report(where, "must list exactly two endpoints")
            return None
        addresses: dict[str, list[Any]] = {}
        for family in ("ipv4", "ipv6"):
            if not typed and family in body:
                value = body[family]
                if not isinstance(value, list) or not 1 <= len(value) <= 2:
                    report(
                        f"{path}.{family}",
                        "must be a list of one or two addresses (a.b.c.d/len), one per endpoint",
                    )
                else:
                    addresses[family] = value
        result: list[Endpoint] = []
        for position, item in enumerate(raw):
            item_path = f"{where}[{position}]"
            mac = ipv4 = ipv6 = None
            if typed:
                found = f.mapping(item, item_path, report)
                if found is None:
                    return None
                f.unknown_keys(found, {"node", "interface", "mac", "ipv4", "ipv6", "vars"}, item_path, report)
                node = f.string(found.get("node"), f"{item_path}.node", report, allow_empty=False)
                interface = f.string(
                    found.get("interface"), f"{item_path}.interface", report, allow_empty=False
                )
                if "mac" in found:
                    mac = f.string(found["mac"], f"{item_path}.mac", report)
                    if mac is not None and not _MAC.fullmatch(mac):
                        report(f"{item_path}.mac", f"{mac!r} is not a MAC address")
                        mac = None
                if "ipv4" in found:
                    ipv4 = f.ip_interface(found["ipv4"], f"{item_path}.ipv4", report, version=4)
                if "ipv6" in found:
                    ipv6 = f.ip_interface(found["ipv6"], f"{item_path}.ipv6", report, version=6)
            else:
                text = f.string(item, item_path, report)
                if text is None:
                    return None
                node, sep, interface = text.partition(":")
                if not sep or not node or not interface:
                    report(item_path, f"{text!r} must be node:interface")
                    return None
                for family, values in addresses.items():
                    if position < len(values) and values[position] not in ("", None):
                        value = f.ip_interface(
                            values[position],
                            f"{path}.{family}[{position}]",
                            report,
                            version=4 if family == "ipv4" else 6,
                        )
                        if family == "ipv4":
                            ipv4 = value
                        else:
                            ipv6 = value
            if node is None or interface is None:
                return None
            if node not in nodes:
                if node in self.declared:
                    return None  # the node's own problems are reported
                if node in SPECIAL_ENDPOINTS:
                    report(
                        item_path,
                        f"{SPECIAL_ENDPOINTS[node]} links are not supported by meshgate lab (only veth links between nodes)",
                    )
                else:
                    report(item_path, f"no node {node!r} in the topology")
                return None
            if not _IFNAME.fullmatch(interface):
                report(item_path, f"{interface!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")
                return None
            if interface == "lo" or (interface == "eth0" and nodes[node].network_mode != "none"):
                report(
                    item_path,
                    f"{interface} of {node} is not free ({'loopback' if interface == 'lo' else 'the management interface'})",
                )
                return None
            result.append(Endpoint(node=node, interface=interface, mac=mac, ipv4=ipv4, ipv6=ipv6))
        return result

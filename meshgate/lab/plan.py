"""A validated topology turned into what one run of it needs: namespace and interface names
unique on this shared machine, management addresses, each node's labels and environment, and
the stage order checked. No I/O: the run id comes from the caller.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Final

from meshgate.lab import stages
from meshgate.lab.errors import TopologyInvalid, Violation
from meshgate.lab.model import Bind, Endpoint, Healthcheck, RestartPolicy, StageConfig, Topology
from meshgate.lab.topology import lab_directory

#: network namespace names stay readable in `ip netns list` (the kernel allows 255)
MAX_NETNS_NAME: Final = 48
MAX_IFNAME: Final = 15
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class NodePlan:
    name: str
    longname: str
    netns: str
    kind: str
    image: str | None
    cmd: tuple[str, ...]
    exec: tuple[str, ...]
    exec_argv: tuple[tuple[str, ...], ...]
    binds: tuple[Bind, ...]
    tmpfs: dict[str, str]
    #: the node's environment from the topology (processes also get PATH, HOME, HOSTNAME)
    env: dict[str, str]
    #: the topology's labels and containerlab's own (clab-node-name...)
    labels: dict[str, str]
    #: management address and its prefix length; the interface in the lab namespace
    mgmt_ipv4: str | None
    mgmt_prefixlen: int
    mgmt_port: str | None
    healthcheck: Healthcheck | None
    stages: dict[str, StageConfig]
    restart_policy: RestartPolicy
    startup_delay: float
    sysctls: dict[str, str]
    hostname: str
    #: DIR/clab-<lab>/<node>: logs, and __clabNodeDir__
    node_dir: str
    #: data-plane interfaces (link endpoints) in the node
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkPlan:
    index: int
    a: Endpoint
    b: Endpoint
    mtu: int
    #: names of the a and b ends while parked in the lab namespace (before their node takes them)
    parked: tuple[str, str]


@dataclass(frozen=True)
class Plan:
    name: str
    prefix: str
    run_id: str
    topology_file: str
    #: the directory of the topology file, and DIR/clab-<name>
    directory: str
    lab_dir: str
    #: the lab's own namespace: the management bridge and link ends not yet taken by their node
    lab_netns: str
    bridge: str
    mgmt_network: str
    mgmt_subnet: str
    mgmt_gateway: str
    mgmt_mtu: int | None
    nodes: dict[str, NodePlan]
    links: tuple[LinkPlan, ...]
    notes: tuple[str, ...] = field(default=())


def safe_name(text: str) -> str:
    return _UNSAFE.sub("-", text)


def longname(prefix: str, lab: str, node: str) -> str:
    """containerlab's container name: ``<prefix>-<lab>-<node>`` (``<node>`` for an empty
    prefix, ``<lab>-<node>`` for ``__lab-name``)."""
    if prefix == "":
        return node
    if prefix == "__lab-name":
        return f"{lab}-{node}"
    return f"{prefix}-{lab}-{node}"


def _fit(base: str, suffix: str, limit: int) -> str:
    """``base + suffix`` within ``limit`` characters; a shortened base gets a hash of itself."""
    base = safe_name(base)
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:4]
    return base[: limit - len(suffix) - 5] + "-" + digest + suffix


def netns_names(topology: Topology, run_id: str) -> tuple[str, dict[str, str]]:
    """The lab namespace and each node's: ``<longname>-<run id>`` (``...-<run id>-mgmt`` for the
    lab's own), shortened with a hash when long."""
    lab_base = (
        topology.name if topology.prefix in ("", "__lab-name") else f"{topology.prefix}-{topology.name}"
    )
    lab_ns = _fit(lab_base, f"-{run_id}-mgmt", MAX_NETNS_NAME)
    names: dict[str, str] = {}
    taken = {lab_ns}
    for node in topology.nodes:
        name = _fit(longname(topology.prefix, topology.name, node), f"-{run_id}", MAX_NETNS_NAME)
        counter = 1
        while name in taken:
            counter += 1
            name = _fit(
                f"{longname(topology.prefix, topology.name, node)}-{counter}", f"-{run_id}", MAX_NETNS_NAME
            )
        taken.add(name)
        names[node] = name
    return lab_ns, names


def unique_ifnames(wanted: dict[str, str], taken: set[str]) -> dict[str, str]:
    """key -> an interface name from ``wanted[key]``, unique and at most 15 characters."""
    result: dict[str, str] = {}
    for key, name in wanted.items():
        candidate = safe_name(name)[:MAX_IFNAME] or "if"
        counter = 1
        while candidate in taken:
            counter += 1
            suffix = f"-{counter}"
            candidate = safe_name(name)[: MAX_IFNAME - len(suffix)] + suffix
        taken.add(candidate)
        result[key] = candidate
    return result


def to_env_key(label: str) -> str:
    """containerlab's label -> environment variable name (``CLAB_LABEL_`` + this)."""
    return re.sub(r"[^A-Za-z0-9_]+", "", re.sub(r"[-+./]", "_", label)).upper()


def mgmt_addresses(topology: Topology) -> tuple[str, dict[str, str], list[Violation]]:
    """The gateway and each bridged node's address: its ``mgmt-ipv4``, else the next free one
    from .2 upward (of ``ipv4-range`` when set), in the file's node order."""
    subnet = ipaddress.IPv4Network(topology.mgmt.subnet)
    gateway = (
        ipaddress.IPv4Address(topology.mgmt.gateway) if topology.mgmt.gateway else subnet.network_address + 1
    )
    pool_net = ipaddress.IPv4Network(topology.mgmt.range, strict=False) if topology.mgmt.range else subnet
    taken = {gateway} | {ipaddress.IPv4Address(n.mgmt_ipv4) for n in topology.nodes.values() if n.mgmt_ipv4}
    free = (
        host
        for host in pool_net.hosts()
        if host not in taken and host in subnet and host != subnet.broadcast_address
    )
    addresses: dict[str, str] = {}
    problems: list[Violation] = []
    for name, node in topology.nodes.items():
        if node.network_mode == "none":
            continue
        if node.mgmt_ipv4:
            addresses[name] = node.mgmt_ipv4
            continue
        address = next(free, None)
        if address is None:
            problems.append(
                Violation(f"topology.nodes.{name}", f"no free management address left in {pool_net}")
            )
            continue
        addresses[name] = str(address)
    return str(gateway), addresses, problems


def plan(topology: Topology, run_id: str) -> Plan:
    """``TopologyInvalid`` when the stages can never all be reached or addresses run out."""
    problems = stages.check(topology.nodes)
    gateway, addresses, address_problems = mgmt_addresses(topology)
    problems += address_problems
    if problems:
        raise TopologyInvalid(topology.file, problems)
    lab_ns, namespaces = netns_names(topology, run_id)
    lab_dir = lab_directory(topology.directory, topology.name)
    bridge = topology.mgmt.bridge or f"br-{safe_name(topology.mgmt.network)}"[:MAX_IFNAME]
    links = tuple(
        LinkPlan(index=index, a=link.a, b=link.b, mtu=link.mtu, parked=(f"pk{index}a", f"pk{index}b"))
        for index, link in enumerate(topology.links)
    )
    ports = unique_ifnames(
        {name: name for name in addresses}, {bridge} | {p for link in links for p in link.parked}
    )
    interfaces: dict[str, list[str]] = {name: [] for name in topology.nodes}
    for link in links:
        interfaces[link.a.node].append(link.a.interface)
        interfaces[link.b.node].append(link.b.interface)
    prefixlen = ipaddress.IPv4Network(topology.mgmt.subnet).prefixlen
    nodes: dict[str, NodePlan] = {}
    for name, spec in topology.nodes.items():
        node_dir = os.path.join(lab_dir, name)
        long = longname(topology.prefix, topology.name, name)
        labels = dict(spec.labels)
        labels.update({
            "containerlab": topology.name,
            "clab-node-name": name,
            "clab-node-longname": long,
            "clab-node-kind": spec.kind,
            "clab-node-type": spec.type,
            "clab-node-group": spec.group,
            "clab-node-lab-dir": node_dir,
            "clab-topo-file": topology.file,
        })  # fmt: skip
        env = dict(spec.env)
        env.update({f"CLAB_LABEL_{to_env_key(key)}": value for key, value in labels.items()})
        env["CLAB_INTFS"] = str(len(interfaces[name]))
        nodes[name] = NodePlan(
            name=name, longname=long, netns=namespaces[name], kind=spec.kind, image=spec.image,
            cmd=spec.cmd, exec=spec.exec, exec_argv=spec.exec_argv, binds=spec.binds, tmpfs=spec.tmpfs,
            env=env, labels=labels, mgmt_ipv4=addresses.get(name), mgmt_prefixlen=prefixlen,
            mgmt_port=ports.get(name), healthcheck=spec.healthcheck, stages=spec.stages,
            restart_policy=spec.restart_policy, startup_delay=spec.startup_delay, sysctls=spec.sysctls,
            hostname=spec.hostname or name, node_dir=node_dir, interfaces=tuple(interfaces[name]),
        )  # fmt: skip
    return Plan(
        name=topology.name, prefix=topology.prefix, run_id=run_id, topology_file=topology.file,
        directory=topology.directory, lab_dir=lab_dir, lab_netns=lab_ns, bridge=bridge,
        mgmt_network=topology.mgmt.network, mgmt_subnet=topology.mgmt.subnet, mgmt_gateway=gateway,
        mgmt_mtu=topology.mgmt.mtu, nodes=nodes, links=links, notes=topology.notes,
    )  # fmt: skip

"""A lab's network, with ``meshgate.netns``: the namespaces, the management bridge (in the lab's
own namespace, never the root one), each node's ``eth0`` on it, and veth links.

A link is made by whichever of its nodes reaches create-links first: its own end directly in its
namespace under the endpoint's name, the other end parked in the lab namespace (``pk<N>a/b``) until
that node takes it (moved in, renamed, configured). This is containerlab's half-deployed link, and
it lets a node wait for another one's health although they are linked.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from meshgate.lab.model import Endpoint
from meshgate.lab.plan import LinkPlan, NodePlan, Plan
from meshgate.netns.namespace import NETNS_DIR, CommandFailed, Namespace, check_ifname, veth


def _run(argv: Sequence[str], input: str | None = None) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False, input=input)
    if done.returncode != 0:
        raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)


def create_namespace(name: str) -> Namespace:
    """A new namespace named ``name`` with ``lo`` up (the lab's state file records it)."""
    if (NETNS_DIR / name).exists():
        raise FileExistsError(f"network namespace {name} exists already")
    _run(["ip", "netns", "add", name])
    namespace = Namespace(name)
    namespace.set_up("lo")
    return namespace


def create_lab_network(plan: Plan) -> None:
    """The lab namespace and the management bridge with the gateway address on it."""
    lab = create_namespace(plan.lab_netns)
    bridge = check_ifname(plan.bridge)
    commands = f"link add name {bridge} type bridge\n"
    if plan.mgmt_mtu:
        commands += f"link set dev {bridge} mtu {plan.mgmt_mtu}\n"
    prefixlen = plan.mgmt_subnet.split("/")[1]
    commands += f"address add {plan.mgmt_gateway}/{prefixlen} dev {bridge}\nlink set dev {bridge} up\n"
    _run(["ip", "-n", lab.name, "-batch", "-"], input=commands)


def attach_management(plan: Plan, node: NodePlan) -> None:
    """The node's ``eth0`` on the bridge, with its address. No default route via the gateway
    (unlike a container on a docker network): the bridge leads nowhere, and such a route would
    only turn quick "network unreachable" errors (a DNS lookup) into time-outs."""
    if node.mgmt_ipv4 is None or node.mgmt_port is None:
        return
    node_ns, lab_ns = Namespace(node.netns), Namespace(plan.lab_netns)
    veth(node_ns, "eth0", lab_ns, node.mgmt_port)
    lab_ns.ip("link", "set", "dev", node.mgmt_port, "master", plan.bridge)
    commands = f"address add {node.mgmt_ipv4}/{node.mgmt_prefixlen} dev eth0\n"
    if plan.mgmt_mtu:
        commands += f"link set dev eth0 mtu {plan.mgmt_mtu}\n"
    _run(["ip", "-n", node_ns.name, "-batch", "-"], input=commands)


def _end(link: LinkPlan, node: str) -> tuple[Endpoint, str, Endpoint, str]:
    """(this node's endpoint, its parked name, the other endpoint, its parked name)."""
    if link.a.node == node:
        return link.a, link.parked[0], link.b, link.parked[1]
    return link.b, link.parked[1], link.a, link.parked[0]


def _configure(namespace: str, endpoint: Endpoint, mtu: int) -> str:
    commands = f"link set dev {endpoint.interface} mtu {mtu}\n"
    if endpoint.mac:
        commands += f"link set dev {endpoint.interface} address {endpoint.mac}\n"
    commands += f"link set dev {endpoint.interface} up\n"
    for address in (endpoint.ipv4, endpoint.ipv6):
        if address:
            commands += f"address add {address} dev {endpoint.interface}\n"
    return commands


def create_link_end(plan: Plan, link: LinkPlan, node: str) -> None:
    """First end of ``link`` to be deployed: the pair, this end in ``node``, the other parked."""
    own, _own_parked, _other, other_parked = _end(link, node)
    node_ns = plan.nodes[node].netns
    _run([
        "ip", "link", "add", "name", check_ifname(own.interface), "netns", node_ns, "type", "veth",
        "peer", "name", check_ifname(other_parked), "netns", plan.lab_netns,
    ])  # fmt: skip
    _run(["ip", "-n", node_ns, "-batch", "-"], input=_configure(node_ns, own, link.mtu))


def take_link_end(plan: Plan, link: LinkPlan, node: str) -> None:
    """Second end: move it from the lab namespace into ``node`` under its endpoint name."""
    own, own_parked, _other, _other_parked = _end(link, node)
    node_ns = plan.nodes[node].netns
    _run(["ip", "-n", plan.lab_netns, "link", "set", "dev", own_parked, "netns", node_ns])
    commands = f"link set dev {own_parked} name {check_ifname(own.interface)}\n" + _configure(
        node_ns, own, link.mtu
    )
    _run(["ip", "-n", node_ns, "-batch", "-"], input=commands)

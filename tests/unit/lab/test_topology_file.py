"""Reading containerlab topology files: the merge of defaults, kinds, groups and nodes as
containerlab does it, binds with their magic variables, environment expansion, and every
violation reported at once with its field path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from meshgate.lab.envsubst import expand
from meshgate.lab.errors import TopologyInvalid
from meshgate.lab.model import Bind, Topology
from meshgate.lab.topology import parse_topology

LAB = "/labs/demo"


@dataclass
class FakeHost:
    """Paths that exist, file contents, environment: no machine needed."""

    paths: set[str] = field(
        default_factory=lambda: {f"{LAB}/config", f"{LAB}/config/bird.conf", "/root/keys"}
    )
    files: dict[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    home: str = "/root"

    def exists(self, path: str) -> bool:
        return path in self.paths

    def read_text(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory")
        return self.files[path]


def parse(text: str, host: FakeHost | None = None) -> Topology:
    return parse_topology(text, file=f"{LAB}/topology.clab.yml", host=host or FakeHost())


def violations(text: str, host: FakeHost | None = None) -> list[str]:
    with pytest.raises(TopologyInvalid) as caught:
        parse(text, host)
    return [str(v) for v in caught.value.violations]


MERGE = """
name: demo
topology:
  defaults:
    kind: linux
    image: default:1
    env: {A: defaults, B: defaults, N: 3}
    labels: {tier: default, site: lab}
    exec: [echo defaults]
    binds: [config:/etc/app:ro, config/bird.conf:/etc/bird.conf]
  kinds:
    linux:
      image: kind:1
      env: {B: kind, C: kind}
      exec: [echo kind]
  groups:
    routers:
      cmd: bird -f
      labels: {tier: router}
  nodes:
    r1:
      group: routers
      env: {C: node, D: "yes"}
      exec: [echo node, echo defaults]
      binds: [__clabNodeDir__:/etc/app, ~/keys:/keys:ro]
    h1:
      image: own:2
      cmd: "python -m http.server 8080"
      entrypoint: nice -n 5
"""


def test_node_group_kind_defaults_merge_as_containerlab_does() -> None:
    topology = parse(MERGE)
    r1, h1 = topology.nodes["r1"], topology.nodes["h1"]
    assert r1.kind == "linux"
    assert r1.image == "kind:1"
    assert h1.image == "own:2"
    # maps: the most specific level wins key by key; numbers become text
    assert r1.env == {"A": "defaults", "B": "kind", "C": "node", "D": "yes", "N": "3"}
    assert r1.labels == {"tier": "router", "site": "lab"}
    # lists: concatenated from defaults to the node, a repeated command once
    assert r1.exec == ("echo defaults", "echo kind", "echo node")
    assert r1.exec_argv[0] == ("echo", "defaults")
    # cmd from the group; entrypoint and cmd make one argv
    assert r1.cmd == ("bird", "-f")
    assert h1.cmd == ("nice", "-n", "5", "python", "-m", "http.server", "8080")
    # linux nodes restart always unless told otherwise (containerlab's linux kind)
    assert r1.restart_policy == "always"


def test_binds_merge_by_target_and_expand_magic_variables() -> None:
    r1 = parse(MERGE).nodes["r1"]
    assert set(r1.binds) == {
        # the node's bind on /etc/app replaces the defaults' one
        Bind(source=f"{LAB}/clab-demo/r1", target="/etc/app", read_only=False),
        Bind(source=f"{LAB}/config/bird.conf", target="/etc/bird.conf", read_only=False),
        Bind(source="/root/keys", target="/keys", read_only=True),
    }
    lab_dir = parse("name: demo\ntopology:\n  nodes:\n    n: {kind: linux, binds: [__clabDir__:/clab:ro]}\n")
    assert lab_dir.nodes["n"].binds == (Bind(source=f"{LAB}/clab-demo", target="/clab", read_only=True),)


def test_environment_expansion_keeps_unset_variables_and_double_dollars() -> None:
    assert expand("a $HOME ${HOME} $$HOME ${UNSET} $UNSET ${UNSET:-dflt} ${EMPTY:-e} ${EMPTY-e} $1", {"HOME": "/h", "EMPTY": ""}) == (
        "a /h /h $HOME ${UNSET} $UNSET dflt e  $1"
    )  # fmt: skip
    topology = parse(
        "name: ${LAB_NAME}\ntopology:\n  nodes:\n    n: {kind: linux, exec: [\"sh -c 'echo $$X'\"]}\n",
        FakeHost(environ={"LAB_NAME": "fromenv"}),
    )
    assert topology.name == "fromenv"
    assert topology.nodes["n"].exec_argv == (("sh", "-c", "echo $X"),)


def test_links_short_and_typed_forms() -> None:
    topology = parse("""
name: demo
topology:
  nodes:
    a: {kind: linux}
    b: {kind: linux}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: [10.0.0.1/30, 10.0.0.2/30]
    - type: veth
      mtu: 1500
      endpoints:
        - {node: a, interface: e2, mac: "02:00:00:00:00:01"}
        - {node: b, interface: e2, ipv4: 10.0.1.2/30}
""")
    first, second = topology.links
    assert (first.a.node, first.a.interface, first.a.ipv4, first.b.ipv4, first.mtu) == (
        "a",
        "eth1",
        "10.0.0.1/30",
        "10.0.0.2/30",
        9500,
    )
    assert (second.a.mac, second.b.ipv4, second.mtu) == ("02:00:00:00:00:01", "10.0.1.2/30", 1500)


def test_every_violation_is_reported_with_its_field_path() -> None:
    found = violations("""
name: bad name
colour: blue
mgmt:
  ipv4-subnet: 10.0.0.0/33
  ipv6-subnet: 2001:db8::/64
topology:
  defaults:
    binds: [/nowhere:/etc/x, "just-a-volume", "config:relative:ro", "config:/x:rx"]
  kinds:
    linux:
      mgmt-ipv4: 172.20.20.9
  nodes:
    edge-eu:
      kind: linux
      ports: ["80:8080"]
      exec: ["echo 'unclosed"]
      healthcheck: {test: [CURL, x], interval: -1}
      restart-policy: sometimes
      sysctls: {kernel.panic: 1}
      stages:
        create:
          exec: [{command: ls, phase: on-enter}]
          wait-for: [{node: ghost, stage: healthy}, {node: r1, stage: later}]
    r1: {kind: nokia_srlinux}
    r2: {kind: linux, frobnicate: true}
  links:
    - endpoints: ["edge-eu:eth1", "nobody:eth1"]
    - endpoints: ["edge-eu:eth0", "r2:eth1"]
    - endpoints: ["edge-eu:a-very-long-interface-name", "r2:eth2"]
    - endpoints: ["host:eth5", "r2:eth3"]
    - type: vxlan
      endpoint: {node: r2, interface: vx0}
""")
    expected = [
        "name: 'bad name' must start with a letter or digit and hold only letters, digits, - . _",
        "colour: unknown field",
        "mgmt.ipv6-subnet: not supported by meshgate lab (the management network is IPv4 only)",
        "mgmt.ipv4-subnet: '10.0.0.0/33' is not an IPv4 subnet (a.b.c.d/len)",
        "topology.defaults.binds[1]: 'just-a-volume' looks like an anonymous volume (no host path): use source:target[:ro]",
        "topology.defaults.binds[2]: target 'relative' must be an absolute path inside the node",
        "topology.defaults.binds[3]: mode 'rx' is not supported (ro or rw)",
        "topology.kinds.linux.mgmt-ipv4: can only be set on a node (each node needs its own address)",
        "topology.nodes.edge-eu.ports: not supported by meshgate lab (port publishing needs Docker: reach nodes with `meshgate lab exec`)",
        'topology.nodes.edge-eu.exec[0]: cannot be split into words (No closing quotation): "echo \'unclosed"',
        'topology.nodes.edge-eu.healthcheck.test: must be [CMD-SHELL, "command"] or [CMD, program, args...] (or [NONE])',
        "topology.nodes.edge-eu.healthcheck.interval: must be at least 0, not -1",
        "topology.nodes.edge-eu.restart-policy: must be one of no, on-failure, always, unless-stopped, not 'sometimes'",
        "topology.nodes.edge-eu.sysctls.kernel.panic: only net.* sysctls can be set (a node shares the host's kernel; others would change the host)",
        "topology.nodes.edge-eu.stages.create.wait-for[1].stage: must be one of create, create-links, configure, healthy, exit, not 'later'",
        "topology.nodes.edge-eu.stages.create.exec[0]: a command in the node cannot run on entering create (the node does not exist yet): use target: host, or phase: on-exit",
        "topology.defaults.binds[0]: host path /nowhere does not exist (for node edge-eu)",
        "topology.nodes.r1.kind: kind 'nokia_srlinux' is not supported: meshgate lab runs nodes of kind linux only",
        "topology.nodes.r2.frobnicate: unknown field",
        "topology.defaults.binds[0]: host path /nowhere does not exist (for node r2)",
        "topology.nodes.edge-eu.stages.create.wait-for[0].node: no node 'ghost' in the topology",
        "topology.links[0].endpoints[1]: no node 'nobody' in the topology",
        "topology.links[1].endpoints[0]: eth0 of edge-eu is not free (the management interface)",
        "topology.links[2].endpoints[0]: 'a-very-long-interface-name' is not an interface name (1-15 of A-Z a-z 0-9 _ . -)",
        "topology.links[3].endpoints[0]: host links are not supported by meshgate lab (only veth links between nodes)",
        "topology.links[4]: link type 'vxlan' is not supported by meshgate lab (only veth links between nodes)",
    ]
    assert sorted(found) == sorted(expected)


def test_missing_kind_and_bad_node_name() -> None:
    assert violations("name: x\ntopology:\n  nodes:\n    a: {}\n    'b c': {kind: linux}\n") == [
        "topology.nodes.a.kind: no kind (set kind on the node, its group, or topology.defaults)",
        "topology.nodes.b c: a node name must start with a letter or digit and hold only letters, digits, - . _ |",
    ]


def test_management_addresses_are_checked() -> None:
    found = violations("""
name: x
mgmt: {ipv4-subnet: 10.9.0.0/24, ipv4-gw: 10.9.0.254}
topology:
  defaults: {kind: linux}
  nodes:
    a: {mgmt-ipv4: 10.9.0.10}
    b: {mgmt-ipv4: 10.9.0.10}
    c: {mgmt-ipv4: 10.8.0.1}
    d: {mgmt-ipv4: 10.9.0.254}
    e: {mgmt-ipv4: 10.9.0.11, network-mode: none}
""")
    assert found == [
        "topology.nodes.b.mgmt-ipv4: 10.9.0.10 is also the address of node a",
        "topology.nodes.c.mgmt-ipv4: 10.8.0.1 is not a host address of the management subnet 10.9.0.0/24",
        "topology.nodes.d.mgmt-ipv4: 10.9.0.254 is the management network's gateway",
        "topology.nodes.e.mgmt-ipv4: a node with network-mode none has no management interface",
    ]


def test_env_files_and_ignored_fields() -> None:
    host = FakeHost(files={f"{LAB}/vars.env": "# comment\nX=from-file\nY=file\n"})
    topology = parse(
        "name: x\ntopology:\n  nodes:\n    n: {kind: linux, env-files: [vars.env], env: {Y: env}, memory: 1Gb}\n",
        host,
    )
    assert topology.nodes["n"].env == {"X": "from-file", "Y": "env"}
    assert topology.notes == ("topology.nodes.n.memory: accepted, without effect in meshgate lab",)


def test_stage_exec_in_both_schema_forms() -> None:
    topology = parse("""
name: x
topology:
  nodes:
    n:
      kind: linux
      stages:
        configure:
          exec: {on-enter: [echo in], on-exit: [echo out]}
        healthy:
          exec: [{command: touch /tmp/x, target: host, phase: on-exit}]
""")
    stages = topology.nodes["n"].stages
    assert [(c.command, c.phase, c.target) for c in stages["configure"].commands] == [
        ("echo in", "on-enter", "container"), ("echo out", "on-exit", "container"),
    ]  # fmt: skip
    assert [(c.command, c.phase, c.target) for c in stages["healthy"].commands] == [
        ("touch /tmp/x", "on-exit", "host")
    ]

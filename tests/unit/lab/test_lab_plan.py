"""Planning a run: unique namespace and interface names, management addresses, labels and
environment, the stage order (cycles and endless waits refused), and the state file's codec."""

from __future__ import annotations

import pytest

from meshgate.lab import codec
from meshgate.lab.errors import TopologyInvalid
from meshgate.lab.plan import MAX_IFNAME, Plan, longname, plan, to_env_key, unique_ifnames
from meshgate.lab.topology import parse_topology
from tests.unit.lab.test_topology_file import LAB, FakeHost


def planned(text: str, run_id: str = "abc123") -> Plan:
    return plan(parse_topology(text, file=f"{LAB}/topology.clab.yml", host=FakeHost()), run_id)


def refused(text: str) -> list[str]:
    with pytest.raises(TopologyInvalid) as caught:
        planned(text)
    return [str(v) for v in caught.value.violations]


LONG = """
name: a-lab-with-a-rather-long-name
topology:
  defaults: {kind: linux}
  nodes:
    node-with-a-long-name-one: {}
    node-with-a-long-name-one.x: {}
    node-with-a-long-name-two: {}
    "weird|name": {}
    fixed: {mgmt-ipv4: 172.20.20.2}
    isolated: {network-mode: none}
  links:
    - endpoints: ["node-with-a-long-name-one:eth1", "node-with-a-long-name-two:eth1"]
    - endpoints: ["node-with-a-long-name-one:eth2", "isolated:eth0"]
"""


def test_names_are_unique_short_and_carry_the_run_id() -> None:
    result = planned(LONG)
    namespaces = [node.netns for node in result.nodes.values()] + [result.lab_netns]
    assert len(set(namespaces)) == len(namespaces)
    assert all(len(name) <= 48 and name.endswith(("-abc123", "-abc123-mgmt")) for name in namespaces)
    assert result.nodes["fixed"].netns == "clab-a-lab-with-a-rather-long-name-fixed-abc123"
    assert "|" not in result.nodes["weird|name"].netns
    interfaces = [n.mgmt_port for n in result.nodes.values() if n.mgmt_port] + [result.bridge]
    interfaces += [name for link in result.links for name in link.parked]
    assert len(set(interfaces)) == len(interfaces)
    assert all(len(name) <= MAX_IFNAME for name in interfaces)
    assert result.nodes["isolated"].mgmt_port is None
    assert result.nodes["isolated"].mgmt_ipv4 is None
    assert result.nodes["node-with-a-long-name-one"].interfaces == ("eth1", "eth2")
    assert result.nodes["node-with-a-long-name-one"].env["CLAB_INTFS"] == "2"


def test_prefixes_name_containers_as_containerlab() -> None:
    assert longname("clab", "lab", "n1") == "clab-lab-n1"
    assert longname("", "lab", "n1") == "n1"
    assert longname("__lab-name", "lab", "n1") == "lab-n1"
    assert (
        planned("name: lab\nprefix: ''\ntopology:\n  nodes:\n    n1: {kind: linux}\n").nodes["n1"].netns
        == "n1-abc123"
    )


def test_unique_ifnames_shorten_and_number() -> None:
    names = unique_ifnames({"a": "averyveryverylongname", "b": "averyveryverylongname", "c": "br"}, {"br"})
    assert names == {"a": "averyveryverylo", "b": "averyveryvery-2", "c": "br-2"}


def test_mgmt_addresses_static_first_then_from_dot_two_in_file_order() -> None:
    result = planned("""
name: lab
mgmt: {ipv4-subnet: 10.7.0.0/24}
topology:
  defaults: {kind: linux}
  nodes:
    a: {}
    b: {mgmt-ipv4: 10.7.0.2}
    c: {}
""")
    assert result.mgmt_gateway == "10.7.0.1"
    assert {name: node.mgmt_ipv4 for name, node in result.nodes.items()} == {
        "a": "10.7.0.3",
        "b": "10.7.0.2",
        "c": "10.7.0.4",
    }
    assert result.nodes["a"].mgmt_prefixlen == 24
    ranged = planned(
        "name: lab\nmgmt: {ipv4-subnet: 10.7.0.0/24, ipv4-range: 10.7.0.128/25}\ntopology:\n  nodes:\n    a: {kind: linux}\n"
    )
    assert ranged.nodes["a"].mgmt_ipv4 == "10.7.0.129"


def test_mgmt_addresses_can_run_out() -> None:
    nodes = "".join(f"    n{i}: {{kind: linux}}\n" for i in range(6))
    assert refused(f"name: lab\nmgmt: {{ipv4-subnet: 10.7.0.0/29}}\ntopology:\n  nodes:\n{nodes}") == [
        "topology.nodes.n5: no free management address left in 10.7.0.0/29"
    ]


def test_labels_become_environment_as_in_containerlab() -> None:
    node = planned(
        "name: lab\ntopology:\n  nodes:\n    n1: {kind: linux, labels: {role: edge, my.label-x: 1}, env: {A: b}}\n"
    ).nodes["n1"]
    assert node.labels["role"] == "edge"
    assert node.labels["clab-node-name"] == "n1"
    assert node.labels["containerlab"] == "lab"
    assert node.env["A"] == "b"
    assert node.env["CLAB_LABEL_ROLE"] == "edge"
    assert node.env["CLAB_LABEL_MY_LABEL_X"] == "1"
    assert node.env["CLAB_LABEL_CLAB_NODE_NAME"] == "n1"
    assert to_env_key("clab-node.name/x+y") == "CLAB_NODE_NAME_X_Y"


def test_wait_for_cycles_are_refused_with_the_path_that_closes_them() -> None:
    found = refused("""
name: lab
topology:
  defaults: {kind: linux}
  nodes:
    a:
      stages:
        create:
          wait-for: [{node: b, stage: healthy}]
    b:
      stages:
        configure:
          wait-for: [{node: a, stage: create-links}]
""")
    assert len(found) == 1
    assert found[0].startswith("topology.nodes.")
    assert "wait-for cycle:" in found[0]
    assert "a:create" in found[0]
    assert "b:configure" in found[0]


def test_a_node_may_wait_for_the_health_of_a_node_it_is_linked_to() -> None:
    result = planned("""
name: lab
topology:
  defaults: {kind: linux}
  nodes:
    a: {stages: {create: {wait-for: [{node: b, stage: healthy}]}}}
    b: {}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
""")
    assert result.nodes["a"].stages["create"].wait_for[0].node == "b"


def test_waiting_for_the_exit_of_a_node_that_never_exits_is_refused() -> None:
    found = refused("""
name: lab
topology:
  defaults: {kind: linux}
  nodes:
    job: {cmd: "true"}
    once: {cmd: "true", restart-policy: "no"}
    server: {stages: {create: {wait-for: [{node: job, stage: exit}, {node: once, stage: exit}]}}}
""")
    assert found == [
        "topology.nodes.server.stages.create.wait-for[0]: waits for job to exit, but job never exits: "
        'its restart-policy is always (set restart-policy: "no" or on-failure)'
    ]


def test_a_plan_survives_the_state_file() -> None:
    original = planned(LONG)
    assert codec.load(Plan, codec.dump(original)) == original

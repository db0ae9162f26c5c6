"""terraform/, offline, as CI runs it: ``fmt -check``; ``init`` and ``validate`` of the module and
both examples (the AWS provider from the filesystem mirror named in terraform/offline.tfrc);
variables that break a rule fail ``plan`` with a message naming them; what the module renders
with real join tokens from a real global CP (cloud-init accepted by ``cloud-init schema``, units
by ``systemd-analyze verify``, the manifests by ``meshgate apply --dry-run``); and, as root, the
lab example applied with local state, written out with its write_files.py, brought up with
``meshgate lab up``, its checks passing, and down leaving nothing.

Terraform runs in a copy of terraform/ in a temporary directory (its .terraform, state and lock
files never land in the checkout). A missing terraform fails these tests: they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshgate.lab.state import LabState
from tests.support.labs import REPO, assert_nothing_left, meshgate, read_state
from tests.support.netns import require_root
from tests.support.processes import Admin, GlobalCPProcess, cli

TREE = REPO / "terraform"
TFRC = TREE / "offline.tfrc"
ROLES = ("zone", "edge", "ingress", "proxy")


def terraform_binary() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.fail(
            "terraform is not installed (CI expects Terraform 1.9 or later at /usr/local/bin/terraform, "
            "and the AWS provider 5.100.0 in the mirror /opt/tf-plugins): these tests do not skip",
            pytrace=False,
        )
    return found


def tf_env(**extra: str) -> dict[str, str]:
    """Offline: the repository's CLI configuration (the AWS provider from the mirror only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "MESHGATE_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(TFRC), TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1", **extra
    )
    return env


def tf(directory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = tf_env(TF_DATA_DIR=str(directory / ".terraform"))
    return subprocess.run(
        [terraform_binary(), f"-chdir={directory}", *args, "-no-color"],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def copy_tree(destination: Path) -> Path:
    """terraform/ as committed (no working-directory leftovers), under ``destination``."""
    ignore = shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.*", "out", "clab-*")
    return Path(shutil.copytree(TREE, destination / "terraform", ignore=ignore))


# -- formatting, init and validate -----------------------------------------------------------


def test_every_file_is_formatted() -> None:
    done = subprocess.run(
        [terraform_binary(), "fmt", "-check", "-recursive", "-diff", str(TREE)],
        capture_output=True, text=True, timeout=60, env=tf_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("tf"))


@pytest.mark.parametrize("config", ["modules/meshgate-region", "examples/aws", "examples/lab"])
def test_init_and_validate_offline(tree: Path, config: str) -> None:
    directory = tree / config
    started = time.monotonic()
    ok(tf(directory, "init", "-input=false", "-lockfile=readonly"))
    validated = json.loads(tf(directory, "validate", "-json").stdout)
    print(f"\n[terraform] {config}: init + validate {time.monotonic() - started:.1f}s")
    assert validated["valid"], validated
    assert (validated["error_count"], validated["warning_count"]) == (0, 0), validated["diagnostics"]
    # the committed lock file pins the mirrored provider; init had nothing to add to it
    lock = directory / ".terraform.lock.hcl"
    committed = TREE / config / ".terraform.lock.hcl"
    assert lock.exists() == committed.exists()
    if lock.exists():
        assert lock.read_text() == committed.read_text()


# -- a real global CP, its join tokens, and the module rendering a region for cloud-init -------


@dataclass
class Issued:
    cp: GlobalCPProcess
    fingerprint: str
    tokens: dict[str, str]  # role -> reusable token of eu-west
    other_zone: str  # a zone token of us-east
    single_use: str  # an edge token of eu-west that is not reusable


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    cp = GlobalCPProcess(tmp_path_factory.mktemp("tf-global") / "global").start()
    admin = Admin(cp)

    def create(role: str, zone: str, reusable: bool = True) -> dict[str, Any]:
        body = {"role": role, "zone": zone, "ttl": "720h", "reusable": reusable}
        status, made = admin.call("POST", "/api/v1/tokens", body)  # what `meshgate token create` does
        assert status == 201, made
        result: dict[str, Any] = made
        return result

    try:
        # as an operator makes them (and one through the CLI itself)
        done = cli(["token", "create", "--role", "zone", "--zone", "eu-west", "--ttl", "720h", "--reusable",
                    "-o", "json"], cp.cli_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        made = {"zone": json.loads(done.stdout)} | {role: create(role, "eu-west") for role in ROLES[1:]}
        yield Issued(
            cp, made["zone"]["caFingerprint"], {role: t["token"] for role, t in made.items()},
            create("zone", "us-east")["token"], create("edge", "eu-west", reusable=False)["token"],
        )  # fmt: skip
    finally:
        cp.stop()


def region(issued: Issued, **overrides: Any) -> dict[str, Any]:
    """A module block: one region with every role, for cloud-init."""
    block: dict[str, Any] = {
        "zone": "eu-west",
        "zone_description": "Europe (Paris)",
        "global_cp_url": "https://global.example.net:5685",
        "ca_fingerprint": issued.fingerprint,
        "join_tokens": issued.tokens,
        "anycast_prefixes": ["203.0.113.0/24"],
        "zone_cp": {"name": "zcp-1", "address": "10.1.0.10"},
        "edges": [{"name": "edge-1", "address": "10.1.0.20", "asn": 65101,
                   "neighbors": [{"address": "10.1.0.1", "asn": 65001}]}],
        "ingresses": [{"name": "ingress-1", "address": "10.1.0.30"}],
        "workloads": [{"name": "web-1", "address": "10.1.0.40", "services": [
            {"name": "web", "port": 8080}, {"name": "api", "port": 8081, "health": {"type": "http", "path": "/healthz"}},
        ]}],
    }  # fmt: skip
    block.update(overrides)
    return block


def write_root(
    tree: Path, directory: Path, modules: dict[str, dict[str, Any]], outputs: dict[str, Any] | None = None
) -> Path:
    """A root configuration of ``modules`` (each a block calling the tree's meshgate-region)."""
    directory.mkdir(exist_ok=True)
    source = os.path.relpath(tree / "modules" / "meshgate-region", directory)
    config: dict[str, Any] = {
        "module": {name: {"source": source, **block} for name, block in modules.items()}
    }
    if outputs:
        config["output"] = outputs
    (directory / "main.tf.json").write_text(json.dumps(config, indent=1))
    return directory


@dataclass
class Rendered:
    cloud_init: dict[str, str]
    manifest: str
    hosts: dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tree: Path, issued: Issued) -> Rendered:
    root = write_root(tree, tree.parent / "cloud", {"region": region(issued)}, {
        "cloud_init": {"value": "${module.region.cloud_init}", "sensitive": True},
        "manifest": {"value": "${module.region.manifest}"},
        "hosts": {"value": "${module.region.hosts}"},
    })  # fmt: skip
    ok(tf(root, "init", "-input=false"))
    ok(tf(root, "apply", "-auto-approve", "-input=false"))
    outputs = json.loads(ok(tf(root, "output", "-json")))
    return Rendered(outputs["cloud_init"]["value"], outputs["manifest"]["value"], outputs["hosts"]["value"])


def cloud_config(text: str) -> dict[str, Any]:
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def test_cloud_init_per_host_is_valid_cloud_config(rendered: Rendered, tmp_path: Path) -> None:
    binary = shutil.which("cloud-init")
    if binary is None:
        pytest.fail("cloud-init is not installed (apt: cloud-init; .ci/run installs it)", pytrace=False)
    assert sorted(rendered.cloud_init) == ["edge-1", "ingress-1", "web-1", "zcp-1"]

    def schema(host: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"{host}.yaml"
        path.write_text(rendered.cloud_init[host])
        return subprocess.run([binary, "schema", "--config-file", str(path)], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(rendered.cloud_init, pool.map(schema, rendered.cloud_init), strict=True))
    for host, done in results.items():
        assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"
        assert "Valid cloud-config" in done.stdout
        size = len(rendered.cloud_init[host].encode())
        assert size < 16384, f"{host}: {size} bytes (EC2 user data is at most 16 KiB)"


def test_cloud_init_writes_the_token_of_the_role_and_enables_the_roles_units(
    rendered: Rendered, issued: Issued
) -> None:
    expected = {
        "zcp-1": ("zone", ["meshgate-zone-cp.service"]),
        "edge-1": ("edge", ["meshgate-edge.service"]),
        "ingress-1": ("ingress", ["meshgate-ingress.service"]),
        "web-1": ("proxy", ["meshgate-proxy@web.service", "meshgate-proxy@api.service"]),
    }
    for host, (role, units) in expected.items():
        doc = cloud_config(rendered.cloud_init[host])
        files = {f["path"]: f for f in doc["write_files"]}
        token = files["/etc/meshgate/join-token"]
        assert token["content"].strip() == issued.tokens[role]
        assert (token["owner"], token["permissions"]) == ("root:meshgate", "0640")
        assert all(f["defer"] for f in files.values())  # after the meshgate user exists
        env = files["/etc/meshgate/meshgate.env"]["content"]
        assert f"MESHGATE_CA_FINGERPRINT={issued.fingerprint}\n" in env
        assert "MESHGATE_JOIN_TOKEN_FILE=/etc/meshgate/join-token\n" in env
        assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", *units]
        assert doc["runcmd"][1] == ["/opt/meshgate/bin/pip", "install", "--quiet", "meshgate"]
        assert rendered.hosts[host]["units"] == units
    web = {f["path"] for f in cloud_config(rendered.cloud_init["web-1"])["write_files"]}
    assert {"/etc/meshgate/proxy-web.yaml", "/etc/meshgate/proxy-api.yaml",
            "/etc/systemd/system/meshgate-proxy@.service"} <= web  # fmt: skip


def units_of(rendered: Rendered, directory: Path) -> list[str]:
    """Every unit cloud-init writes, under ``directory``; the names to verify (instances of
    templates, as enabled)."""
    names: list[str] = []
    for host, text in rendered.cloud_init.items():
        doc = cloud_config(text)
        for f in doc["write_files"]:
            if f["path"].startswith("/etc/systemd/system/"):
                (directory / Path(f["path"]).name).write_text(f["content"])
        names += doc["runcmd"][-1][3:]
        assert names, host
    for name in names:
        if "@" in name:  # systemd-analyze reads an instance from a file of its own name
            template = directory / (name.split("@")[0] + "@.service")
            (directory / name).write_text(template.read_text())
    return names


@pytest.mark.root
def test_systemd_analyze_verify_accepts_every_unit(rendered: Rendered, tmp_path: Path) -> None:
    """At the paths cloud-init uses: the ExecStart binary must exist for ``verify``, so it runs in
    a private mount namespace with a stub at /opt/meshgate/bin/meshgate (root for unshare)."""
    require_root()
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed (apt: systemd)", pytrace=False)
    names = units_of(rendered, tmp_path)
    assert len(names) == 5
    (tmp_path / "stub").write_text("#!/bin/sh\n")
    script = (
        "set -e; mount -t tmpfs tmpfs /opt; mkdir -p /opt/meshgate/bin; "
        f"install -m 0755 {tmp_path}/stub /opt/meshgate/bin/meshgate; cd {tmp_path}; "
        f"exec {binary} verify {' '.join('./' + n for n in names)}"
    )
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # no warning either (unknown keys, bad values)


def test_the_edge_unit_stops_exabgp_with_it_and_drains(rendered: Rendered) -> None:
    doc = cloud_config(rendered.cloud_init["edge-1"])
    unit = next(f["content"] for f in doc["write_files"] if f["path"].endswith("meshgate-edge.service"))
    lines = set(unit.splitlines())
    assert {"KillMode=mixed", "KillSignal=SIGTERM", "Restart=always", "RestartSec=2", "TimeoutStopSec=45",
            "ExecStartPre=/usr/sbin/ip addr replace 203.0.113.0/24 dev lo"} <= lines  # fmt: skip
    edge = yaml.safe_load(
        next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/meshgate/edge.yaml")
    )
    assert edge["drain"]["deadline"] == 30  # TimeoutStopSec is above it


def test_the_region_manifest_is_accepted_by_the_global_cp(
    rendered: Rendered, issued: Issued, tmp_path: Path
) -> None:
    path = tmp_path / "region.yaml"
    path.write_text(rendered.manifest)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered.manifest) if d]
    assert kinds == [("Zone", "eu-west"), ("Edge", "edge-1")]
    done = cli(["apply", "--dry-run", "-f", str(path)], issued.cp.cli_env())
    assert done.returncode == 0, done.stdout + done.stderr


# -- variables that break a rule -------------------------------------------------------------

OTHER_CA = "sha256:" + "ab" * 32
LAB_EDGE = {
    "name": "edge-1",
    "address": "10.1.0.22",
    "asn": 65101,
    "neighbors": [{"address": "10.1.0.1", "asn": 65001}],
}


def bad_cases(issued: Issued) -> dict[str, tuple[dict[str, Any], str]]:
    """case -> (module arguments changed, the start of the message: the variable's name first)."""
    tokens = issued.tokens
    lab = {"render_cloud_init": False, "ca_fingerprint": None, "join_tokens": {},
           "zone_cp": {"name": "zcp-1", "address": "10.1.0.10"}, "ingresses": [], "workloads": []}  # fmt: skip
    edge = region(issued)["edges"][0]
    return {
        "zone_uppercase": ({"zone": "EU-West"}, "zone: must be a DNS label"),
        "asn_out_of_range": ({"edges": [{**edge, "asn": 4294967296}]}, "edges: every asn"),
        "neighbor_asn_zero": (
            {"edges": [{**edge, "neighbors": [{"address": "10.1.0.1", "asn": 0}]}]},
            "edges: every asn",
        ),
        "router_id_zero": ({"edges": [{**edge, "router_id": "0.0.0.0"}]}, "edges: address and router_id"),
        "fingerprint_malformed": ({"ca_fingerprint": "sha256:abc"}, "ca_fingerprint: must be sha256:"),
        "fingerprint_missing": ({"ca_fingerprint": None}, "ca_fingerprint: cloud-init pins the global CA"),
        "tokens_missing": (
            {"join_tokens": {"zone": tokens["zone"]}},
            "join_tokens: cloud-init needs a token for every role this region has (missing: edge, ingress, proxy)",
        ),
        "token_of_another_zone": (
            {"join_tokens": {**tokens, "zone": issued.other_zone}},
            "join_tokens: zone: the token is for another zone",
        ),
        "token_of_another_role": (
            {"join_tokens": {**tokens, "edge": tokens["proxy"]}},
            "join_tokens: edge: the token is for another role",
        ),
        "token_single_use": (
            {"join_tokens": {**tokens, "edge": issued.single_use}},
            "join_tokens: edge: the token is single-use",
        ),
        "token_of_another_ca": (
            {"ca_fingerprint": OTHER_CA},
            "join_tokens: edge, ingress, proxy, zone: the token names another CA",
        ),
        "not_a_token": (
            {"join_tokens": {**tokens, "ingress": "hello"}},
            "join_tokens: ingress: not a join token",
        ),
        "prefix_not_canonical": ({"anycast_prefixes": ["203.0.113.10/24"]}, "anycast_prefixes: each must be"),
        "no_prefix_for_edges": ({"anycast_prefixes": []}, "anycast_prefixes: edges need at least one"),
        "host_twice": (
            {"ingresses": [{"name": "edge-1", "address": "10.1.0.30"}]},
            "workloads: host names must be distinct",
        ),
        "service_twice": (
            {
                "workloads": [
                    {"name": "web-1", "address": "10.1.0.40", "services": [{"name": "web", "port": 1}] * 2}
                ]
            },
            "workloads: each host runs at least one service, each once",
        ),
        "drain_deadline": ({"edge_settings": {"drain": {"deadline": -1}}}, "edge_settings: drain.deadline"),
        "lab_neighbor_not_the_router": (
            {**lab, "edges": [LAB_EDGE], "lab": {}},
            "lab: each edge has one neighbor, the router's side",
        ),
        "lab_address_not_in_a_30": (
            {**lab, "edges": [{**LAB_EDGE, "address": "10.1.0.20"}], "lab": {}},
            "lab: every host gets a /30",
        ),
    }


@pytest.fixture(scope="module")
def refused(tree: Path, issued: Issued) -> dict[str, list[dict[str, Any]]]:
    """A plan per case (one plan with every case does not report them all: Terraform stops
    evaluating other modules' variables once some failed): case -> the plan's diagnostics."""

    def plan(case: str, changes: dict[str, Any]) -> list[dict[str, Any]]:
        root = write_root(tree, tree.parent / "bad" / case, {"region": region(issued, **changes)})
        ok(tf(root, "init", "-input=false"))
        done = tf(root, "plan", "-input=false", "-json")
        assert done.returncode == 1, f"{case}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        events = [json.loads(line) for line in done.stdout.splitlines()]
        return [e["diagnostic"] for e in events if e.get("type") == "diagnostic"]

    (tree.parent / "bad").mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores
        futures = {case: pool.submit(plan, case, changes) for case, (changes, _) in bad_cases(issued).items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize(
    "case",
    [
        "zone_uppercase", "asn_out_of_range", "neighbor_asn_zero", "router_id_zero", "fingerprint_malformed",
        "fingerprint_missing", "tokens_missing", "token_of_another_zone", "token_of_another_role",
        "token_single_use", "token_of_another_ca", "not_a_token", "prefix_not_canonical", "no_prefix_for_edges",
        "host_twice", "service_twice", "drain_deadline", "lab_neighbor_not_the_router", "lab_address_not_in_a_30",
    ],
)  # fmt: skip
def test_a_variable_breaking_a_rule_fails_the_plan_naming_it(
    refused: dict[str, list[dict[str, Any]]], issued: Issued, case: str
) -> None:
    _, message = bad_cases(issued)[case]
    variable = message.split(":", 1)[0]
    diagnostics = refused.get(case, [])
    assert diagnostics, f"{case}: no error (it should fail: {message})"
    assert {d["summary"] for d in diagnostics} == {"Invalid value for variable"}, diagnostics
    matching = [d for d in diagnostics if d["detail"].startswith(message)]
    assert matching, [d["detail"] for d in diagnostics]
    traversals = {v["traversal"] for d in matching for v in d["snippet"].get("values", [])}
    named = [t for t in traversals if t == f"var.{variable}" or t.startswith(f"var.{variable}.")]
    assert named, (traversals, matching)


def test_the_plan_output_an_operator_reads_names_the_variable(tree: Path, issued: Issued) -> None:
    root = write_root(tree, tree.parent / "one-bad", {"region": region(issued, zone="EU-West")})
    ok(tf(root, "init", "-input=false"))
    done = tf(root, "plan", "-input=false")
    assert done.returncode == 1
    assert "Error: Invalid value for variable" in done.stderr
    assert 'var.zone is "EU-West"' in done.stderr
    said = " ".join(done.stderr.split())  # Terraform wraps the message
    assert (
        "zone: must be a DNS label (at most 63 lowercase letters, digits or '-', starting and ending with a "
        'letter or digit), got "EU-West".'
    ) in said


# -- the lab example -------------------------------------------------------------------------


@dataclass
class LabExample:
    directory: Path  # the lab directory written from the outputs
    outputs: dict[str, Any]


@pytest.fixture(scope="module")
def lab_example(tree: Path) -> LabExample:
    example = tree / "examples" / "lab"
    ok(tf(example, "init", "-input=false"))
    started = time.monotonic()
    ok(tf(example, "apply", "-auto-approve", "-input=false"))
    assert (example / "terraform.tfstate").exists()  # local state
    outputs = json.loads(ok(tf(example, "output", "-json")))
    print(f"\n[terraform] lab example: apply + output {time.monotonic() - started:.1f}s")
    # the lab directory beside the copy: what a user writes with the example's script
    directory = tree.parent / "tf-lab"
    written = subprocess.run(
        [sys.executable, str(example / "write_files.py"), str(directory)],
        input=json.dumps(outputs["files"]["value"]), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert f"into {directory}" in written.stdout
    return LabExample(directory, {name: o["value"] for name, o in outputs.items()})


def test_the_lab_example_writes_a_valid_lab(lab_example: LabExample) -> None:
    from meshgate.lab.checks import load_checks, unknown_nodes
    from meshgate.lab.topology import read_topology

    directory = lab_example.directory
    assert (directory / "topology.clab.yml").read_text() == lab_example.outputs["topology"]
    assert os.access(directory / "bin" / "meshgate", os.X_OK)
    topology = read_topology(directory)
    assert len(topology.nodes) == 13
    checks = load_checks((directory / "checks.yml").read_text())
    assert len(checks) == 10
    assert unknown_nodes(checks, topology.nodes) == []
    # every meshgate host runs its units from the files the module rendered, bound at their paths
    for name in ("zcp-eu", "edge-eu", "ingress-us", "web-eu-1"):
        node = topology.nodes[name]
        assert node.cmd[:3] == ("bash", "/lab/host.sh", "eth1")
        targets = {bind.target: bind.source for bind in node.binds}
        assert targets["/etc/meshgate"] == str(directory / "nodes" / name / "etc" / "meshgate")
        assert targets["/etc/systemd/system"] == str(
            directory / "nodes" / name / "etc" / "systemd" / "system"
        )


def test_the_lab_examples_manifests_are_accepted_by_the_global_cp(
    lab_example: LabExample, issued: Issued
) -> None:
    manifests = lab_example.directory / "lab" / "manifests"
    assert sorted(p.name for p in manifests.iterdir()) == sorted(lab_example.outputs["manifests"])
    done = cli(["apply", "--dry-run", "-f", str(manifests)], issued.cp.cli_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "eu-west" in done.stdout
    assert "edge-us" in done.stdout


@dataclass
class Lab:
    directory: Path
    state: LabState


@pytest.fixture(scope="module")
def lab(lab_example: LabExample) -> Iterator[Lab]:
    require_root()
    started = time.monotonic()
    done = meshgate("lab", "up", str(lab_example.directory), timeout=400)
    print(f"\n[terraform] lab up: {time.monotonic() - started:.1f}s")
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield Lab(lab_example.directory, read_state(lab_example.directory))
    finally:
        meshgate("lab", "down", str(lab_example.directory), timeout=120)


@pytest.mark.root
@pytest.mark.slow
def test_the_lab_comes_up_and_its_checks_pass(lab: Lab) -> None:
    done = meshgate("lab", "check", str(lab.directory), "-o", "json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads(done.stdout)["checks"]
    assert len(checks) == 10
    assert [c["name"] for c in checks if not c["passed"]] == [], checks
    status = json.loads(meshgate("lab", "status", str(lab.directory), "-o", "json").stdout)
    assert {n["restarts"] for n in status["nodes"]} == {0}, status


@pytest.mark.root
@pytest.mark.slow
def test_the_lab_nodes_run_what_systemd_would(lab: Lab) -> None:
    """The command lines are the units' ExecStart (unit-run.py logs each), with the CA fingerprint
    of the lab's global CP; a unit's command given another fingerprint is refused at once."""
    log = (lab.directory / "clab-tf-lab" / "edge-eu" / "stderr.log").read_text()
    assert (
        "unit-run: meshgate-edge.service: /opt/meshgate/bin/meshgate edge run --zone-cp tls://10.1.2.2:5682 "
        "--token-file /clab/shared/tokens/edge-eu-west --data-dir /var/lib/meshgate/edge "
        "--config /etc/meshgate/edge.yaml"
    ) in log
    web = (lab.directory / "clab-tf-lab" / "web-eu-1" / "stderr.log").read_text()
    for unit in ("meshgate-sample-workload@8080", "meshgate-sample-workload@8081", "meshgate-proxy@web",
                 "meshgate-proxy@api"):  # fmt: skip
        assert f"unit-run: {unit}.service: " in web
    refused = meshgate(
        "lab", "exec", str(lab.directory), "edge-eu", "--", "/opt/meshgate/bin/meshgate", "edge", "run",
        "--zone-cp", "tls://10.1.2.2:5682", "--token-file", "/clab/shared/tokens/edge-eu-west",
        "--data-dir", "/var/lib/meshgate/pin-test", "--config", "/etc/meshgate/edge.yaml",
        "--ca-fingerprint", OTHER_CA,
    )  # fmt: skip
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert f"but --ca-fingerprint is {OTHER_CA}" in refused.stderr
    assert not (lab.directory / "clab-tf-lab" / "edge-eu" / "pin-test").exists()


@pytest.mark.root
@pytest.mark.slow
def test_down_leaves_nothing_behind(lab: Lab) -> None:
    done = meshgate("lab", "down", str(lab.directory), timeout=120)
    assert done.returncode == 0, done.stderr
    assert_nothing_left(lab.state)

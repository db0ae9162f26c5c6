"""The operator's first steps, with real processes: ``meshgate global-cp run`` on SQLite,
``meshgate apply/get/delete/describe`` as separate commands, restarts and crashes."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import GlobalCPProcess, cli, cli_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[GlobalCPProcess]:
    process = GlobalCPProcess(tmp_path / "global-cp").start()
    yield process
    process.kill()


def test_fresh_install_apply_get_and_restart(cp: GlobalCPProcess) -> None:
    env = cp.cli_env()
    token_mode = stat.S_IMODE(os.stat(cp.token_file).st_mode)
    assert token_mode == 0o600
    applied = cli(["apply", "-f", str(EXAMPLES)], env)
    assert applied.returncode == 0, applied.stderr
    assert "globalservice/web created" in applied.stdout.splitlines()
    listing = cli_json(["get", "globalservices"], env)
    assert isinstance(listing, dict)
    before = {d["metadata"]["name"]: d for d in listing["items"]}
    assert set(before) == {"web", "bastion"}
    assert before["web"]["spec"]["vips"] == ["203.0.113.10"]

    assert cp.stop() == 0  # SIGTERM: a clean exit
    cp.start()
    after = cli_json(["get", "globalservices"], cp.cli_env())
    assert isinstance(after, dict)
    assert {d["metadata"]["name"]: d for d in after["items"]} == before
    # The admin token was announced on the first start only.
    assert cp.log.read_text().count("admin token written to") == 1
    table = cli(["get", "zones"], cp.cli_env())
    assert table.stdout.splitlines()[0].split() == [
        "NAME", "REGION", "ENABLED", "CONNECTED", "APPLIED", "LAG", "DATAPLANES", "LAST", "NACK", "AGE"
    ]  # fmt: skip
    assert table.stdout.splitlines()[1].split()[:4] == ["eu-west", "Europe", "(Paris)", "yes"]


def test_invalid_file_lists_every_violation_and_changes_nothing(cp: GlobalCPProcess, tmp_path: Path) -> None:
    env = cp.cli_env()
    assert cli(["apply", "-f", str(EXAMPLES / "01-zones.yaml")], env).returncode == 0
    before = cli_json(["get", "zones"], env)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (EXAMPLES / "02-services.yaml").read_text()
        + "---\napiVersion: meshgate/v1alpha1\nkind: GlobalService\nmetadata: {name: shop}\n"
        "spec:\n  service: shop\n  vips: [203.0.113.300]\n"
        "  ports: [{name: w, port: 80, protocol: quic, targetPort: http}]\n"
        "---\napiVersion: meshgate/v1alpha1\nkind: Zone\nmetadata: {name: new-zone}\nspec: {bogus: 1}\n"
    )
    done = cli(["apply", "-f", str(bad)], env)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: 3 violation(s); nothing was written (HTTP 400 Invalid)")
    assert f"  {bad} document 2 (GlobalService/shop): spec.vips[0]: must be an IPv4 or IPv6 address" in lines
    assert (
        f"  {bad} document 2 (GlobalService/shop): spec.ports[0].protocol: "
        "must be one of http, https, tcp, tls-passthrough"
    ) in lines
    assert f"  {bad} document 3 (Zone/new-zone): spec.bogus: unknown field" in lines
    assert cli_json(["get", "zones"], env) == before
    services = cli_json(["get", "services"], env)
    assert isinstance(services, dict)
    assert services["items"] == []

    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("kind: Zone\nmetadata: {name: [\n")
    done = cli(["apply", "-f", str(broken_yaml)], env)
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: {broken_yaml}: invalid YAML at line 3")


def test_exit_codes_tell_what_went_wrong(cp: GlobalCPProcess, tmp_path: Path) -> None:
    env = cp.cli_env()
    assert cli(["apply", "-f", str(EXAMPLES)], env).returncode == 0
    zone = cli_json(["get", "zone", "eu-west"], env)
    assert isinstance(zone, dict)
    stale = json.loads(json.dumps(zone))
    stale["spec"]["region"] = "changed"
    fresh = cli(["apply", "-f", "-"], env, stdin=json.dumps(stale))
    assert fresh.returncode == 0, fresh.stderr  # at the current version: fine
    conflict = cli(["apply", "-f", "-"], env, stdin=json.dumps(stale))  # now stale
    assert conflict.returncode == 4
    assert "changed since it was read" in conflict.stderr

    referenced = cli(["delete", "zone", "eu-west"], env)
    assert referenced.returncode == 3
    assert "still referenced by Edge/edge-par-1 (spec.zone)" in referenced.stderr
    assert cli(["get", "zone", "atlantis"], env).returncode == 7
    assert cli(["get", "widgets"], env).returncode == 3

    wrong = {**env, "MESHGATE_TOKEN": "mgat_wrong"}
    wrong.pop("MESHGATE_TOKEN_FILE")
    denied = cli(["get", "zones"], wrong)
    assert denied.returncode == 5
    assert "not valid for this global CP" in denied.stderr

    nowhere = {**env, "MESHGATE_SERVER": "http://127.0.0.1:9"}
    unreachable = cli(["get", "zones"], nowhere)
    assert unreachable.returncode == 6
    assert "cannot reach the global CP at http://127.0.0.1:9" in unreachable.stderr


def test_describe_shows_references_both_ways(cp: GlobalCPProcess) -> None:
    env = cp.cli_env()
    assert cli(["apply", "-f", str(EXAMPLES)], env).returncode == 0
    text = cli(["describe", "globalservice", "web"], env).stdout
    assert "References:\n  Service/web\n  Zone/eu-west\n  Zone/us-east" in text
    text = cli(["describe", "zone", "us-east"], env).stdout
    assert "Referenced by:\n  GlobalService/bastion\n  GlobalService/web\n  Edge/edge-iad-1" in text


def test_token_create_prints_a_verifiable_token(cp: GlobalCPProcess) -> None:
    env = cp.cli_env()
    done = cli(["token", "create", "--role", "edge", "--zone", "eu-west", "--ttl", "2h"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mgjt1.")
    assert len(done.stdout.strip().splitlines()) == 1
    bad = cli(["token", "create", "--role", "edge", "--zone", "EU", "--ttl", "2h"], env)
    assert bad.returncode == 3
    assert "zone: must be a DNS label" in bad.stderr


def test_sigkill_loses_no_acknowledged_write(cp: GlobalCPProcess) -> None:
    """Writes stream in; the process dies mid-stream; every acknowledged one survives."""
    acked: list[str] = []
    token = cp.token()
    for i in range(400):
        if i == 150:
            cp.kill()
        body = json.dumps(
            {
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "meshgate/v1alpha1",
                        "kind": "Zone",
                        "metadata": {"name": f"z-{i}"},
                        "spec": {"region": str(i)},
                    }
                ],
            }
        ).encode()
        request = urllib.request.Request(
            cp.url + "/api/v1/apply",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    acked.append(f"z-{i}")
        except (urllib.error.URLError, ConnectionError):
            break
    assert len(acked) >= 150
    cp.start()
    listing = cli_json(["get", "zones"], cp.cli_env())
    assert isinstance(listing, dict)
    stored = {d["metadata"]["name"] for d in listing["items"]}
    assert set(acked) <= stored

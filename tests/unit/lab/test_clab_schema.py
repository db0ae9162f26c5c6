"""Every topology file of the repository is valid containerlab: checked against containerlab's
own JSON schema (v0.79.0), read from ``../shared/data/containerlab/clab.schema.json`` beside the
repository (never copied into it). They also pass our own reader."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import validators

from meshgate.lab.topology import read_topology

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO.parent / "shared" / "data" / "containerlab" / "clab.schema.json"
TOPOLOGIES = sorted(
    [*REPO.glob("tests/data/labs/*/topology.clab.yml"), *REPO.glob("labs/*/topology.clab.yml")]
)


def schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        pytest.fail(
            f"containerlab's schema not found: looked for {SCHEMA} (../shared/data/containerlab/clab.schema.json beside the repository)"
        )
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def _python_pattern(pattern: str) -> str:
    # the schema's patterns are ECMAScript: \p{N}\p{L} (Unicode digits and letters) are what
    # Python's re calls [^\W_]
    return pattern.replace(r"[\p{N}\p{L}]", r"[^\W_]")


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not re.search(_python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


ClabValidator = validators.extend(jsonschema.Draft7Validator, {"pattern": _pattern})


def test_the_schema_is_where_the_tests_look_for_it() -> None:
    assert schema()["$id"] == "https://containerlab.dev/clab.schema.json"


def test_there_are_topologies_to_check() -> None:
    assert any("tests/data/labs" in str(path) for path in TOPOLOGIES)


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(REPO)))
def test_topology_files_follow_containerlabs_schema(path: Path) -> None:
    validator = ClabValidator(schema())
    errors = sorted(
        validator.iter_errors(yaml.safe_load(path.read_text())), key=lambda e: list(e.absolute_path)
    )
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: str(p.relative_to(REPO)))
def test_topology_files_pass_the_lab_runners_reader(path: Path) -> None:
    topology = read_topology(path.parent)
    assert topology.nodes


def test_the_schema_check_catches_a_bad_file() -> None:
    validator = ClabValidator(schema())
    bad = {
        "name": "x",
        "topology": {"nodes": {"a": {"kind": "linux", "mgmt-ipv4": "not-an-address", "colour": 1}}},
    }
    messages = [e.message for e in validator.iter_errors(bad)]
    assert messages

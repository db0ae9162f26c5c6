"""Reading files: YAML the way operators mean it, JSON, and syntax errors with positions."""

from __future__ import annotations

import pytest

from meshgate.resources.documents import parse_text
from meshgate.resources.violations import ValidationFailed


def error(text: str) -> str:
    with pytest.raises(ValidationFailed) as failed:
        parse_text(text)
    return str(failed.value)


def test_yaml_one_point_one_surprises_are_off() -> None:
    docs = parse_text("country: no\nswitch: on\nwhen: 2026-01-31T12:00:00Z\nflag: true\n")
    assert docs == [{"country": "no", "switch": "on", "when": "2026-01-31T12:00:00Z", "flag": True}]


def test_repeated_keys_are_errors() -> None:
    assert error("a: 1\nb: 2\na: 3\n") == "invalid YAML at line 3, column 1: duplicate key 'a' (line 3)"


def test_syntax_errors_name_line_and_column() -> None:
    assert error("spec:\n  ports: [1, 2\n").startswith("invalid YAML at line 3, column 1")
    assert error('{"kind": }') == "invalid JSON at line 1, column 10: Expecting value"


def test_multi_document_yaml_skips_empty_documents() -> None:
    assert parse_text("---\na: 1\n---\n---\nb: 2\n") == [{"a": 1}, {"b": 2}]


def test_json_object_array_and_list() -> None:
    assert parse_text('{"a": 1}') == [{"a": 1}]
    assert parse_text('[{"a": 1}, {"b": 2}]') == [{"a": 1}, {"b": 2}]
    assert parse_text('{"kind": "List", "items": [{"a": 1}]}') == [{"a": 1}]

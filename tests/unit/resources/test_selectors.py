from __future__ import annotations

import pytest

from meshgate.resources.selectors import Selector, SelectorError


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("env notin (prod)", {}, True),
        ("team", {"team": "x"}, True),
        ("!team", {"team": "x"}, False),
        ("app=web,env in (prod),!legacy", {"app": "web", "env": "prod"}, True),
        ("app=web,env in (prod),!legacy", {"app": "web", "env": "prod", "legacy": "1"}, False),
        ("", {"any": "thing"}, True),
    ],
)
def test_matches(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert Selector.parse(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["app in ()", "a=b=c", "=x", "app in (a", ",,"])
def test_malformed_selectors_are_refused(bad: str) -> None:
    with pytest.raises(SelectorError):
        Selector.parse(bad)

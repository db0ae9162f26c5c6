"""What every idle connection keeps: the per-connection objects have no instance dict (an
HTTP protocol with more than 30 attributes gets a dict of its own, about 1.5 KB per connection;
``python -m bench memory`` measures the whole)."""

from __future__ import annotations

import pytest

from meshgate.proxy.http.server import HttpServer


@pytest.mark.parametrize("cls", [HttpServer])
def test_a_connection_object_has_no_instance_dict(cls: type) -> None:
    assert cls.__dictoffset__ == 0, f"{cls.__name__} instances carry a __dict__"

"""The proxy's own configuration file: HTTP settings and every problem reported with its path."""

from __future__ import annotations

from typing import Any

import pytest

from zones.config import ConfigError, parse


def local(**extra: Any) -> dict[str, Any]:
    return {
        "name": "web-1", "service": "web", "inbound": {"address": "127.0.0.1", "port": 10001},
        "instances": [{"address": "127.0.0.1", "port": 8080}], **extra,
    }  # fmt: skip


def test_http_settings_are_read_with_their_defaults() -> None:
    config = parse(local(), "local")
    assert config.protocol == ""  # the Service decides
    assert config.http.header_timeout == 10.0
    assert config.http.access_log is None
    assert config.mesh_outbound is None
    config = parse(local(
        protocol="http", meshOutbound={"port": 15080},
        outbounds=[{"service": "pay", "port": 15001, "protocol": "tcp"}],
        http={"headerTimeout": 2, "upstreamTimeout": 30, "accessLog": {"path": "/tmp/a.log", "sample": 0.1}},
    ), "local")  # fmt: skip
    assert config.protocol == "http"
    assert config.outbounds[0].protocol == "tcp"
    assert (config.mesh_outbound.address, config.mesh_outbound.port) == ("127.0.0.1", 15080)  # type: ignore[union-attr]
    assert config.http.header_timeout == 2.0
    assert config.http.upstream_timeout == 30.0
    assert config.http.access_log is not None
    assert (config.http.access_log.path, config.http.access_log.sample) == ("/tmp/a.log", 0.1)


def test_every_bad_http_setting_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(local(
            protocol="grpc", meshOutbound={"port": 70000}, outbounds=[{"service": "pay", "port": 1, "protocol": "udp"}],
            http={"headerTimeout": 0, "bogus": 1, "accessLog": {"sample": 3, "errors": "yes", "path": ""}},
        ), "local")  # fmt: skip
    assert sorted(caught.value.problems) == sorted([
        "protocol: must be http or tcp",
        "meshOutbound.port: must be a port number",
        "outbounds[0].protocol: must be http or tcp",
        "http.headerTimeout: must be a number of at least 0.1",
        "http.bogus: unknown field",
        "http.accessLog.sample: must be between 0 and 1",
        "http.accessLog.errors: must be true or false",
        "http.accessLog.path: must be a file path or '-' (standard output)",
    ])  # fmt: skip

"""A topology as the runner understands it, after validation and the defaults > kinds > groups
> node merge: plain frozen data, no I/O (``topology`` builds it, ``plan`` turns it into names
and addresses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

STAGES: Final = ("create", "create-links", "configure", "healthy", "exit")
Stage = Literal["create", "create-links", "configure", "healthy", "exit"]
RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]
#: containerlab's defaults
DEFAULT_PREFIX: Final = "clab"
DEFAULT_MGMT_NETWORK: Final = "clab"
DEFAULT_MGMT_SUBNET: Final = "172.20.20.0/24"
DEFAULT_LINK_MTU: Final = 9500
#: docker's healthcheck defaults (seconds; retries)
HEALTH_INTERVAL: Final = 30.0
HEALTH_TIMEOUT: Final = 30.0
HEALTH_RETRIES: Final = 3


@dataclass(frozen=True)
class Bind:
    """``source:target[:ro]`` with the source resolved to an absolute host path."""

    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class Healthcheck:
    """docker's healthcheck: ``argv`` runs inside the node; healthy after one success, unhealthy
    after ``retries`` failures in a row once ``start_period`` is over."""

    argv: tuple[str, ...]
    display: str
    interval: float = HEALTH_INTERVAL
    timeout: float = HEALTH_TIMEOUT
    start_period: float = 0.0
    retries: int = HEALTH_RETRIES


@dataclass(frozen=True)
class StageCommand:
    """A per-stage command: run in the node (``container``) or on the host, when the node enters
    or leaves the stage."""

    command: str
    argv: tuple[str, ...]
    target: Literal["container", "host"] = "container"
    phase: Literal["on-enter", "on-exit"] = "on-enter"


@dataclass(frozen=True)
class WaitFor:
    node: str
    stage: Stage


@dataclass(frozen=True)
class StageConfig:
    wait_for: tuple[WaitFor, ...] = ()
    commands: tuple[StageCommand, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    """One node, every level merged (node > group > kind > defaults)."""

    name: str
    kind: str
    image: str | None = None
    group: str = ""
    type: str = ""
    #: entrypoint + cmd, split with shlex; empty: the node only holds its namespaces
    cmd: tuple[str, ...] = ()
    #: ``exec`` commands as written, and split
    exec: tuple[str, ...] = ()
    exec_argv: tuple[tuple[str, ...], ...] = ()
    binds: tuple[Bind, ...] = ()
    tmpfs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    mgmt_ipv4: str | None = None
    network_mode: Literal["bridge", "none"] = "bridge"
    healthcheck: Healthcheck | None = None
    stages: dict[str, StageConfig] = field(default_factory=dict)
    restart_policy: RestartPolicy = "always"
    startup_delay: float = 0.0
    sysctls: dict[str, str] = field(default_factory=dict)
    hostname: str = ""


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str
    mac: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass(frozen=True)
class Link:
    """A veth pair between two node interfaces."""

    a: Endpoint
    b: Endpoint
    mtu: int = DEFAULT_LINK_MTU


@dataclass(frozen=True)
class Mgmt:
    network: str = DEFAULT_MGMT_NETWORK
    bridge: str = ""
    subnet: str = DEFAULT_MGMT_SUBNET
    gateway: str | None = None
    range: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class Topology:
    """A validated topology file."""

    name: str
    prefix: str
    mgmt: Mgmt
    nodes: dict[str, NodeSpec]
    links: tuple[Link, ...]
    #: the topology file and its directory (relative host paths are relative to it)
    file: str
    directory: str
    #: fields accepted but without effect here (images, resources...), for the operator
    notes: tuple[str, ...] = ()

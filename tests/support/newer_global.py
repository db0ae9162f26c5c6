"""The meshgate CLI with one kind more than this version knows: a stand-in for a newer global
CP talking to older zones (``python -m tests.support.newer_global global-cp run ...``)."""

from __future__ import annotations

from pydantic import Field

from meshgate.cli.main import main
from meshgate.resources.kinds import REGISTRY
from meshgate.resources.model import Spec
from meshgate.resources.registry import KindDescriptor, Owner, Scope, SyncDirection


class RateLimitPolicySpec(Spec):
    requests_per_second: int = Field(ge=1)


REGISTRY.register(
    KindDescriptor(
        kind="RateLimitPolicy",
        plural="ratelimitpolicies",
        spec_type=RateLimitPolicySpec,
        scope=Scope.GLOBAL,
        owner=Owner.OPERATOR,
        sync=SyncDirection.GLOBAL_TO_ZONE,
        description="A policy kind from a future version.",
    )
)

if __name__ == "__main__":
    main()

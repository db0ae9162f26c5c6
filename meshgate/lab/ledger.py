"""Reconcile what clients sent and were told against what workloads received. No I/O.

A scenario's load clients (``meshgate.lab.load``) tag every request (``X-Request-Tag``) and
record its outcome; the sample workloads (``meshgate workload run``) record every tag they
receive. The ledger holds when:

- nothing acknowledged was lost: every request a client saw answered 200 reached a workload;
- no non-idempotent request (POST) was executed twice;
- nothing arrived that no client sent (tags of this run only: other traffic is ignored).

Idempotent requests that arrived more than once (a proxy or an edge retried them) are counted,
not hidden; so are failed requests that a workload executed anyway (the client cannot know).
Failures are split at the route switch: connections opened before it (resets at the switch)
and after it (which must be none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass
class LedgerResult:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # outcome -> count
    lost: list[str] = field(default_factory=list)  # acknowledged, never received
    duplicated: list[str] = field(default_factory=list)  # non-idempotent, received twice or more
    phantom: list[str] = field(default_factory=list)  # received, never sent
    retried: int = 0  # idempotent requests received more than once
    executed_but_failed: int = 0  # the client saw a failure, a workload ran it
    failed_before_switch: int = 0  # on connections opened before the route switch
    failed_after_switch: int = 0  # on connections opened after it
    served_by: Counter[str] = field(default_factory=Counter)  # "edge/zone" -> count

    @property
    def holds(self) -> bool:
        return not (self.lost or self.duplicated or self.phantom)

    def figures(self) -> dict[str, Any]:
        """A JSON-ready summary (tags listed up to 10 per kind)."""
        return {
            "ledger": "holds" if self.holds else "BROKEN",
            "sent": self.sent, "acknowledged": self.acknowledged, "failed": self.failed,
            "failures": dict(self.failures),
            "failed_before_switch": self.failed_before_switch, "failed_after_switch": self.failed_after_switch,
            "lost": len(self.lost), "duplicated": len(self.duplicated), "phantom": len(self.phantom),
            "retried": self.retried, "executed_but_failed": self.executed_but_failed,
            "served_by": dict(self.served_by),
            "examples": {k: v[:10] for k, v in
                         (("lost", self.lost), ("duplicated", self.duplicated), ("phantom", self.phantom)) if v},
        }  # fmt: skip


def reconcile(
    sent: Iterable[Mapping[str, Any]],
    received: Iterable[Mapping[str, Any]],
    *,
    run: str,
    switched_at: float | None = None,
) -> LedgerResult:
    """``sent``: the load clients' records (``tag``, ``method``, ``outcome``, ``opened``, ``edge``,
    ``zone``); ``received``: the workloads' records (``tag``, ``method``); ``run``: the tag prefix
    of this run; ``switched_at``: when the route switched (the clients' monotonic clock)."""
    result = LedgerResult()
    methods: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    for record in sent:
        tag = str(record["tag"])
        methods[tag] = str(record.get("method", "GET")).upper()
        outcome = str(record.get("outcome", "error"))
        outcomes[tag] = outcome
        result.sent += 1
        if outcome == "ok":
            result.acknowledged += 1
            result.served_by[f"{record.get('edge', '')}/{record.get('zone', '')}"] += 1
            continue
        result.failed += 1
        result.failures[outcome] += 1
        if switched_at is not None:
            if float(record.get("opened", 0.0)) <= switched_at:
                result.failed_before_switch += 1
            else:
                result.failed_after_switch += 1
    prefix = f"{run}-"
    arrivals = Counter(str(r["tag"]) for r in received if str(r.get("tag", "")).startswith(prefix))
    for tag, count in sorted(arrivals.items()):
        method = methods.get(tag)
        if method is None:
            result.phantom.append(tag)
            continue
        if count > 1:
            if method in IDEMPOTENT:
                result.retried += 1
            else:
                result.duplicated.append(tag)
        if outcomes[tag] != "ok":
            result.executed_but_failed += 1
    result.lost = sorted(tag for tag, outcome in outcomes.items() if outcome == "ok" and tag not in arrivals)
    return result

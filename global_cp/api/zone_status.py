"""What ``GET /api/v1/zones`` adds to each zone: its sync state as recorded by the replica that
holds its stream, and a summary of what it reports (proxies, instances, ingresses)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from meshgate.resources.kinds.dataplane import DataplaneSpec
from meshgate.resources.kinds.system import ZoneSessionSpec
from meshgate.resources.kinds.zone_ingress import ZoneIngressSpec
from meshgate.resources.kinds.zone_insight import ZoneInsightSpec
from meshgate.store.mirror import StoreMirror


def _seconds_since(stamp: str, now: datetime) -> int:
    return max(0, int((now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()))


def zone_statuses(mirror: StoreMirror, now: datetime) -> dict[str, dict[str, Any]]:
    everything = list(mirror.resources.values())
    out: dict[str, dict[str, Any]] = {}
    dataplanes: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    healthy: Counter[str] = Counter()
    ingresses: Counter[str] = Counter()
    for r in everything:
        if r.kind == "Dataplane":
            dp = r.spec_as(DataplaneSpec)
            dataplanes[dp.zone] += 1
            instances[dp.zone] += len(dp.workloads)
            healthy[dp.zone] += sum(w.health == "healthy" for w in dp.workloads)
        elif r.kind == "ZoneIngress":
            ingresses[r.spec_as(ZoneIngressSpec).zone] += 1
    for r in everything:
        if r.kind == "ZoneSession":
            out.setdefault(r.name, {})["sync"] = _sync(r.spec_as(ZoneSessionSpec), now)
        elif r.kind == "ZoneInsight":
            insight = r.spec_as(ZoneInsightSpec)
            out.setdefault(insight.zone, {})["zoneCP"] = {
                "version": insight.cp_version,
                "appliedVersion": insight.applied_version,
                "connectedProxies": insight.connected_proxies,
                "lastNack": insight.last_nack.model_dump(by_alias=True) if insight.last_nack else None,
            }
    for zone in set(dataplanes) | set(ingresses) | set(out):
        out.setdefault(zone, {})["inventory"] = {
            "dataplanes": dataplanes[zone],
            "instances": instances[zone],
            "healthyInstances": healthy[zone],
            "ingresses": ingresses[zone],
            "summary": f"{dataplanes[zone]} ({healthy[zone]}/{instances[zone]} healthy)",
        }
    return out


def _sync(session: ZoneSessionSpec, now: datetime) -> dict[str, Any]:
    if session.connected:
        lag = f"{_seconds_since(session.pending_since, now)}s" if session.pending_since else "0s"
    else:
        lag = None
    return {
        "connected": session.connected,
        "since": session.since or None,
        "replica": session.replica or None,
        "appliedVersion": session.applied_version,
        "ackedAt": session.acked_at or None,
        "lag": lag,
        "lastNack": session.last_nack.model_dump(by_alias=True) if session.last_nack else None,
    }

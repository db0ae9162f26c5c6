"""What an edge reports: its ``EdgeStatus`` (registered with its zone CP, synced to the global
CP), the same as ``/status`` JSON, and its gauges for ``/metrics``. Nothing is claimed that
ExaBGP did not confirm (see ``Controller.announced``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge.controller import Controller


def _iso(now: datetime, ago: float) -> str:
    return datetime.fromtimestamp(now.timestamp() - ago, UTC).isoformat().replace("+00:00", "Z")


def edge_status(
    controller: Controller, zone: str, now_mono: float, config_age: float | None
) -> dict[str, Any]:
    now = datetime.now(UTC)
    speaker = controller.speaker
    sessions = []
    if speaker is not None:
        for neighbor in speaker.neighbors:
            sessions.append({
                "neighbor": neighbor.address, "state": neighbor.state, "reason": neighbor.reason[:200],
                "flaps": neighbor.flaps, "since": _iso(now, now_mono - neighbor.since),
            })  # fmt: skip
    elif controller.settings is not None:
        sessions = [{"neighbor": n.address, "state": "down", "reason": "speaker not running"}
                    for n in controller.settings.neighbors]  # fmt: skip
    announcements = []
    for view in controller.announcer.view(now_mono):
        state, reason = view.state, view.reason
        if state != "withdrawn" and not controller.announced(view.vip):
            reason = f"wanted {state}, not announced: " + (
                "BGP disabled" if not controller.config.bgp.enabled
                else "no Edge resource" if controller.proxy.runtime.edge is None
                else controller.speaker_error or "no BGP session established"
            )  # fmt: skip
            state = "withdrawn"
        announcements.append({"vip": view.vip, "state": state, "reason": reason[:200],
                              "since": _iso(now, now_mono - view.since)})  # fmt: skip
    spec: dict[str, Any] = {
        "zone": zone,
        "sessions": sessions,
        "announcements": announcements,
        "updatedAt": _iso(now, 0.0),
        "speaker": {
            "running": bool(speaker is not None and speaker.running),
            "restarts": speaker.restarts if speaker is not None else 0,
            "error": controller.speaker_error[:200],
        },
        "zones": _zones(controller),
        "configAgeSeconds": None if config_age is None else round(config_age, 1),
    }
    plan = controller.plan
    if plan is not None and plan.drain is not None:
        d = plan.drain
        spec["drain"] = {
            "phase": d.phase, "activeConnections": d.active_connections or 0,
            "startedAt": _iso(now, now_mono - d.started_at),
            **({"signalledAt": _iso(now, now_mono - d.signalled_at)} if d.signalled_at is not None else {}),
            **({"withdrawnAt": _iso(now, now_mono - d.withdrawn_at)} if d.withdrawn_at is not None else {}),
            "withdrawReason": d.reason or "",
        }  # fmt: skip
    return spec


def _zones(controller: Controller) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for (_service, zone), health in sorted(controller.proxy.book.zones.items()):
        entry = merged.setdefault(zone, {"zone": zone, "reachable": False, "rttMs": None, "ejected": False})
        entry["reachable"] = entry["reachable"] or health.reachable
        entry["ejected"] = entry["ejected"] or health.ejected
        if health.rtt is not None and health.reachable:
            rtt = round(health.rtt * 1000, 2)
            entry["rttMs"] = rtt if entry["rttMs"] is None else min(entry["rttMs"], rtt)
    return list(merged.values())


def gauges(controller: Controller) -> dict[str, float]:
    return {
        "meshgate_edge_open_connections": float(controller.proxy.open_connections),
        "meshgate_edge_draining": float(controller.draining),
    }


def metric_lines(controller: Controller) -> list[str]:
    """Labelled series: per VIP, per (service, zone)."""
    lines = [
        "# HELP meshgate_edge_vip_announced 1 when ExaBGP confirmed the VIP's route and a session is up.",
        "# TYPE meshgate_edge_vip_announced gauge",
    ]
    for view in controller.announcer.view(0.0):
        lines.append(f'meshgate_edge_vip_announced{{vip="{view.vip}"}} {int(controller.announced(view.vip))}')
    zones = sorted(controller.proxy.book.zones.items())
    for name, text, value in (
        ("zone_reachable", "1 when the last probe round reached the zone's ingress.", "reachable"),
        ("zone_ejected", "1 while the zone is ejected after consecutive failures.", "ejected"),
        ("zone_ejections_total", "Times the zone was ejected.", "ejections"),
    ):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP meshgate_edge_{name} {text}", f"# TYPE meshgate_edge_{name} {kind}"]
        for (service, zone), health in zones:
            lines.append(
                f'meshgate_edge_{name}{{service="{service}",zone="{zone}"}} {int(getattr(health, value))}'
            )
    lines += [
        "# HELP meshgate_edge_zone_rtt_seconds Smoothed probe RTT to the zone's nearest ingress.",
        "# TYPE meshgate_edge_zone_rtt_seconds gauge",
    ]
    for (service, zone), health in zones:
        if health.rtt is not None:
            lines.append(
                f'meshgate_edge_zone_rtt_seconds{{service="{service}",zone="{zone}"}} {health.rtt:.6f}'
            )
    if controller.speaker is not None:
        lines += controller.speaker.metric_lines()
    return lines


def worth_reporting(sent: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """Whether the EdgeStatus ``now`` differs enough from the one last ``sent`` to register again
    before the periodic refresh. Every field counts except the RTTs, which move a little with
    every probe round: an RTT counts once it has moved by more than 1 ms and 20 % from what was
    sent (each registration is a connection to the zone CP, a store write and a sync upstream)."""
    if sent is None:
        return True

    def without_rtts(status: dict[str, Any]) -> dict[str, Any]:
        zones = [{k: v for k, v in z.items() if k != "rttMs"} for z in status.get("zones", [])]
        return {**status, "zones": zones}

    if without_rtts(sent) != without_rtts(now):
        return True
    for before, after in zip(sent.get("zones", []), now.get("zones", []), strict=True):
        old, new = before.get("rttMs"), after.get("rttMs")
        if (old is None) != (new is None):
            return True
        if old is not None and new is not None and abs(new - old) > max(1.0, 0.2 * old):
            return True
    return False

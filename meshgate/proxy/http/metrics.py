"""Golden metrics per service: requests by method, response class and zone; a latency
histogram; requests in flight; upstream errors by kind; requests the proxy refused, by status.

Plain dicts and lists incremented in place on the data path (see ``meshgate.proxy.stats``);
``render`` writes them in the Prometheus text format."""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: latency histogram upper bounds, seconds
BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: response class label by the status's first digit; "none" when no response was sent
CLASSES: Final = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class HttpStats:
    """One service's HTTP figures (a listener's stats when it serves several services)."""

    __slots__ = ("buckets", "in_flight", "latency_count", "latency_sum", "refused", "requests",
                 "retries", "upstream_errors")  # fmt: skip

    def __init__(self) -> None:
        #: (method, response class, zone) -> requests finished
        self.requests: dict[tuple[str, str, str], int] = {}
        #: requests being served now
        self.in_flight = 0
        #: per-bucket counts (not cumulative), the last one for +Inf
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        #: kind (connect, timeout, reset, no_endpoint, protocol...) -> requests that failed upstream
        self.upstream_errors: dict[str, int] = {}
        #: requests refused before reaching an upstream, by status (400, 408, 414, 431, 505...)
        self.refused: dict[int, int] = {}
        #: requests sent again after a reused connection failed before answering
        self.retries = 0

    def finished(self, method: str, status: int, zone: str, seconds: float) -> None:
        key = (method, CLASSES[status // 100] if 100 <= status < 600 else "none", zone)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def refusal(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + inner + "}"


def render(by_key: dict[tuple[str, str], HttpStats]) -> list[str]:
    """Prometheus text lines for every (direction, service)'s figures."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> str:
        full = f"meshgate_http_{name}"
        lines.extend((f"# HELP {full} {text}", f"# TYPE {full} {kind}"))
        return full

    name = family("requests_total", "counter", "Requests finished, by method, response class and zone.")
    for (direction, service), stats in sorted(by_key.items()):
        for (method, code, zone), count in sorted(stats.requests.items()):
            lines.append(
                f"{name}{_labels(direction=direction, service=service, method=method, code=code, zone=zone)} {count}"
            )
    name = family("request_duration_seconds", "histogram", "Time from request head to response end.")
    for (direction, service), stats in sorted(by_key.items()):
        cumulative = 0
        for bound, count in zip((*BUCKETS, float("inf")), stats.buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f"{name}_bucket{_labels(direction=direction, service=service, le=le)} {cumulative}")
        lines.append(f"{name}_sum{_labels(direction=direction, service=service)} {stats.latency_sum}")
        lines.append(f"{name}_count{_labels(direction=direction, service=service)} {stats.latency_count}")
    name = family("requests_in_flight", "gauge", "Requests being served now.")
    for (direction, service), stats in sorted(by_key.items()):
        lines.append(f"{name}{_labels(direction=direction, service=service)} {stats.in_flight}")
    name = family("upstream_errors_total", "counter", "Requests that failed upstream, by kind.")
    for (direction, service), stats in sorted(by_key.items()):
        for kind, count in sorted(stats.upstream_errors.items()):
            lines.append(f"{name}{_labels(direction=direction, service=service, kind=kind)} {count}")
    name = family("requests_refused_total", "counter", "Requests the proxy refused itself, by status.")
    for (direction, service), stats in sorted(by_key.items()):
        for status, count in sorted(stats.refused.items()):
            lines.append(f"{name}{_labels(direction=direction, service=service, status=str(status))} {count}")
    name = family("upstream_retries_total", "counter", "Requests sent again on a new connection.")
    for (direction, service), stats in sorted(by_key.items()):
        lines.append(f"{name}{_labels(direction=direction, service=service)} {stats.retries}")
    return lines

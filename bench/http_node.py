"""``python -m bench.http_node SPEC.json``: the meshgate hop of the ``http`` benchmark.

The local proxy's inbound request path, minus TLS termination: one plain ``Listener`` whose
protocol is an HTTP ``Site`` in front of one ``HttpUpstreams`` with one cluster (``instances``,
least-request balancer) holding the workload (nginx), exactly as ``zones.local.LocalProxy``
builds its inbound (``HttpOptions`` defaults, golden metrics on, the JSON access log on with
every request sampled, the file in the benchmark's temporary directory). No control plane, no
health checks, no admin server: the process holds the HTTP engine and nothing else.

The spec (written by ``bench.http_setup``) gives the listening address, the workload's address,
the access log's path, the zone, and where to write the ready and stats files. The process
serves on uvloop, writes ``ready_file`` once listening, and on SIGTERM or SIGINT writes its
figures (``Stats.snapshot()`` plus the HTTP metrics, the access log's line count and the idle
pooled connections) to ``stats_file``, closes its listener and exits.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from meshgate.lifecycle import until_signal
from meshgate.proxy.cluster import Cluster, Endpoint
from meshgate.proxy.http.access_log import AccessLog
from meshgate.proxy.http.metrics import BUCKETS, HttpStats
from meshgate.proxy.http.options import HttpOptions
from meshgate.proxy.http.server import Site
from meshgate.proxy.http.upstreams import HttpUpstreams
from meshgate.proxy.listener import Listener
from meshgate.proxy.stats import Stats

SERVICE = "web"


def _write_json(path: str, data: Any) -> None:
    """Written whole: whoever waits for the file never reads half of it."""
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def http_snapshot(stats: HttpStats) -> dict[str, Any]:
    """One service's golden metrics as JSON (the tuple keys joined with spaces)."""
    return {
        "requests": {" ".join(key): n for key, n in sorted(stats.requests.items())},
        "in_flight": stats.in_flight,
        "latency_count": stats.latency_count,
        "latency_sum_s": stats.latency_sum,
        "latency_buckets": {
            ("+Inf" if i == len(BUCKETS) else repr(BUCKETS[i])): n for i, n in enumerate(stats.buckets)
        },
        "upstream_errors": dict(stats.upstream_errors),
        "refused": {str(status): n for status, n in stats.refused.items()},
        "retries": stats.retries,
    }


async def serve(spec: dict[str, Any], sink: TextIO) -> int:
    stats = Stats()
    http = stats.http_stats("inbound", SERVICE)
    cluster = Cluster("instances", balancer="least_request", stats=stats.cluster("instances"))
    upstream = spec["upstream"]
    cluster.update([Endpoint(upstream["address"], upstream["port"], zone=spec["zone"])])
    options = HttpOptions()
    ups = HttpUpstreams(SERVICE, lambda: [cluster], options=options, stats=http)
    access_log = AccessLog(sink, sample=1.0)
    site = Site(
        "inbound", lambda host: ups, options=options, stats=http, listener_stats=stats.listener("inbound"),
        access_log=access_log, zone=spec["zone"], upstreams=lambda: [ups],
    )  # fmt: skip
    listener = Listener("inbound", site.protocol, stats=stats.listener("inbound"))
    await listener.start(spec["address"], spec["port"])
    _write_json(spec["ready_file"], {"port": listener.port})
    await until_signal()
    access_log.flush()
    figures: dict[str, Any] = dict(stats.snapshot())
    figures["http"] = {f"{d}/{s}": http_snapshot(v) for (d, s), v in stats.http.items()}
    figures["access_log_lines"] = access_log.lines
    figures["pooled_idle_connections"] = ups.idle_connections
    _write_json(spec["stats_file"], figures)
    listener.close()
    site.drain()
    await listener.wait_drained(1.0)
    site.close()
    return 0


def main(argv: list[str]) -> int:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[1]).read_text())
    with Path(spec["access_log"]).open("a", encoding="utf-8") as sink:
        return uvloop.run(serve(spec, sink))


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""``python -m bench.l4_node SPEC.json``: one meshgate proxy of the ``l4`` benchmark, without a
control plane.

The spec (written by ``bench.l4_setup``) says which role the process plays and gives it what a
zone CP would have: the proxy's own configuration (``zones.config.parse`` input), its mTLS identity
(PEMs, local proxies only) and a static ``zones.runtime.Runtime`` (clusters for a local proxy's
outbounds, routes for an ingress). The process builds ``zones.local.LocalProxy`` or
``zones.ingress.Ingress`` as ``zones.process.Proxy`` does, applies the runtime, marks every instance
healthy (no health checks: the workload is a one-test iperf3 server that a probe would use up),
starts the listeners, writes ``ready_file`` and serves on uvloop until SIGTERM or SIGINT. Then it
writes its ``Stats.snapshot()`` to ``stats_file``, closes its listeners and exits.

Only the data path is imported (no link, admin or health checker), so its RSS is that of the
proxy engine rather than of a whole ``meshgate proxy run`` process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from meshgate.lifecycle import until_signal
from meshgate.proxy.identity import TlsIdentity
from meshgate.proxy.stats import Stats
from zones.config import parse
from zones.ingress import Ingress
from zones.local import LocalProxy
from zones.runtime import ClusterConfig, Group, RouteConfig, Runtime, Target


def runtime_of(spec: dict[str, Any]) -> Runtime:
    """The static runtime of a spec's ``runtime`` section."""
    raw = spec["runtime"]
    clusters = {
        c["service"]: ClusterConfig(
            c["service"],
            c["identity"],
            tuple(
                Group(
                    g["zone"],
                    tuple(Target(t["address"], t["port"], t.get("sni", "")) for t in g["endpoints"]),
                )
                for g in c["groups"]
            ),
        )
        for c in raw.get("clusters", [])
    }
    routes = {
        r["sni"]: RouteConfig(
            r["sni"], r["service"], tuple(Target(t["address"], t["port"]) for t in r["endpoints"])
        )
        for r in raw.get("routes", [])
    }
    return Runtime(1, raw["trust_domain"], tuple(raw["roots"]), clusters, routes)


def build(spec: dict[str, Any]) -> LocalProxy | Ingress:
    config = parse(spec["config"], spec["role"])
    stats = Stats()
    proxy: LocalProxy | Ingress
    if spec["role"] == "ingress":
        proxy = Ingress(config, spec["zone"], stats)
    else:
        pem = spec["identity"]
        tls = TlsIdentity(pem["chain"].encode(), pem["key"].encode(), pem["roots"].encode())
        proxy = LocalProxy(config, tls, stats)
        proxy.set_health(dict.fromkeys(config.instances, True))
    proxy.apply(runtime_of(spec))
    return proxy


def _write_json(path: str, data: Any) -> None:
    """Written whole: whoever waits for the file never reads half of it."""
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


async def serve(spec: dict[str, Any]) -> int:
    proxy = build(spec)
    await proxy.start(reuse_port=False)
    _write_json(spec["ready_file"], {"ports": [listener.port for listener in proxy.listeners]})
    await until_signal()
    _write_json(spec["stats_file"], proxy.stats.snapshot())
    for listener in proxy.listeners:
        listener.close()
    await asyncio.gather(*(listener.wait_drained(1.0) for listener in proxy.listeners))
    return 0


def main(argv: list[str]) -> int:
    import uvloop

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(argv[1]).read_text())
    return uvloop.run(serve(spec))


if __name__ == "__main__":
    sys.exit(main(sys.argv))

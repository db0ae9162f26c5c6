"""A sample HTTP workload for the demo and the labs: ``meshgate workload run``.

It answers every request 200 naming itself and its zone, and keeps a bounded ledger of the
requests that carry ``X-Request-Tag`` (served at ``GET /_meshgate/received``), so a lab can
reconcile what a client sent with what the workloads got. Not on the proxy data path.
"""

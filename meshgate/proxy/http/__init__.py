"""The HTTP/1.1 engine: strict request parsing (httptools), keep-alive on both sides, pooled
upstream connections, streamed bodies with backpressure, Upgrade passthrough, golden metrics and
access logs. ``server.HttpServer`` is the protocol of an accepted connection; it sends each
request to the ``upstreams.HttpUpstreams`` its ``Site`` routes it to. See docs/adr/0004."""

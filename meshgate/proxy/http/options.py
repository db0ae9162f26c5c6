"""Limits and timeouts of the HTTP engine (one ``HttpOptions`` per listener)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpOptions:
    #: a request's line and header block must arrive within this many seconds of its first byte
    #: (a new connection: of the accept); else 408 (or a silent close when nothing arrived)
    header_timeout: float = 10.0
    #: the whole request, body included, must arrive within this (408 if no response began)
    request_timeout: float = 300.0
    #: a keep-alive connection with no request in progress is closed after this
    idle_timeout: float = 60.0
    #: the upstream's response head must arrive within this after the request was sent (504)
    upstream_timeout: float = 15.0
    #: a response (or request body) that moves no byte for this long is cut off
    stall_timeout: float = 60.0
    #: TCP connect and TLS handshake to an upstream endpoint
    connect_timeout: float = 5.0
    #: endpoints tried for one request when connecting fails
    connect_attempts: int = 3
    #: idle pooled upstream connections are closed after this (upstreams often keep 60-75 s)
    pool_idle_timeout: float = 30.0
    #: idle pooled connections kept per endpoint
    pool_max_idle: int = 64
    #: request line (method, target, version) longer than this: 414
    max_request_line: int = 8 * 1024
    #: header block (request line included) larger than this: 431
    max_header_bytes: int = 60 * 1024
    #: more header fields than this: 431
    max_headers: int = 100
    #: how often deadlines are checked (the granularity of every timeout above)
    tick: float = 0.25

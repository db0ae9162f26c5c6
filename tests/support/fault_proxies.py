"""Fault proxies for the edge tests: one started in a thread, listening where the edges reach a
zone's ingress."""

from __future__ import annotations

from tests.support.faults import ThreadedFaultProxy


def start_fault_proxy(listen: tuple[str, int], target: tuple[str, int]) -> ThreadedFaultProxy:
    return ThreadedFaultProxy(target, listen=listen).start()

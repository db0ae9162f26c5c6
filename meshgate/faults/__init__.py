"""A fault-injecting TCP proxy (delay, jitter, bandwidth caps, resets, stalls, refusals): the
netem this kernel lacks, at L4. ``python -m meshgate.faults`` runs one with an HTTP admin
endpoint (``GET/PUT /faults``, ``POST /reset``, ``GET /stats``)."""

from meshgate.faults.faults import Faults, FaultsError, Violation
from meshgate.faults.proxy import FaultProxy, ProxyStats

__all__ = ["FaultProxy", "Faults", "FaultsError", "ProxyStats", "Violation"]

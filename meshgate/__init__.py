"""meshgate: the shared kernel (resource model, stores, PKI, telemetry, CLI)."""

__version__ = "0.1.0"

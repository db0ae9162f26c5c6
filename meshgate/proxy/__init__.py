"""The proxy engine: listeners, relays, clusters (shared by every data-plane role)."""

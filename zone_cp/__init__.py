"""Zone control plane: global sync client, last-good store, proxy sessions, zone CA.
Arrives with the zone control plane milestone."""

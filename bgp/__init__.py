"""ExaBGP configuration, the process-API driver and the announcement state machine.
Arrives with the edge milestone."""

"""Edge role: public listeners, zone selection and failover, and the health controller that
drives ``bgp/`` (announce while able to serve, drain, withdraw). Arrives with the edge milestone."""

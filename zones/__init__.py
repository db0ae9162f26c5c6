"""Zone data plane roles: zone ingress (SNI passthrough), local proxy, workload health.
Arrives with the data plane milestones."""

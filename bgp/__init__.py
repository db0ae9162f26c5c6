"""ExaBGP for the edge: settings from ``spec.bgp``, ExaBGP 5 configuration and API commands, the
announcement state machine, API event parsing, neighbor state and metrics, and the ``Speaker``
that owns the ExaBGP process (see README.md). Import the modules themselves: the protocol cores
(``announcer``, ``commands``, ``events``, ``neighbors``, ``settings``) never import asyncio."""

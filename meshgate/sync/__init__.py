"""The sync library: replicate a set of resources from a source to a sink.

Used global→zone, zone→global, and (next) zone→proxy. ``messages``, ``source`` and
``sink`` are the protocol core and do no I/O; ``websocket`` connects them to aiohttp.
"""

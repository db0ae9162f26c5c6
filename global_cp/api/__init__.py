"""The global CP's HTTP API (aiohttp): resources, watch, tokens, OpenAPI, health."""

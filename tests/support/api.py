"""A thin async client for the global CP API in tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def violations(self) -> list[str]:
        return [
            (f"{v['path']}: " if v.get("path") else "") + v["message"]
            for v in self.body["error"].get("violations", [])
        ]


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        text: str | None = None,
        token: str | None = None,
        content_type: str = "application/yaml",
    ) -> Reply:
        headers = {}
        chosen = token if token is not None else self.token
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        elif text is not None:
            kwargs["data"] = text.encode()
            headers["Content-Type"] = content_type
        async with self.session.request(method, self.url + path, **kwargs) as response:
            raw = await response.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Reply(response.status, parsed, dict(response.headers))

    async def apply(self, *docs: Any, dry_run: bool = False) -> Reply:
        query = "?dryRun=true" if dry_run else ""
        return await self.call("POST", f"/api/v1/apply{query}", body={"kind": "List", "items": list(docs)})

    async def get(self, path: str) -> Reply:
        return await self.call("GET", path)

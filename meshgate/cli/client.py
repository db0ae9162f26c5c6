"""A small blocking HTTP client for the global CP API (the CLI needs nothing more).

``urllib.request`` (and with it ``http.client`` and ``email``, about 1 MB) is imported on the
first request: the edge command group imports this module, and ``meshgate edge run`` never
sends one.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

from meshgate.cli.settings import Settings


class ApiError(Exception):
    """The server refused: its status and its JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(error.get("message") or f"HTTP {status}")
        self.status = status
        self.reason = str(error.get("reason", ""))
        self.violations: list[dict[str, Any]] = list(error.get("violations", []))
        self.retry_after: str | None = None


class Unreachable(Exception):
    """No answer from the server at all."""


class Client:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ssl: ssl.SSLContext | None = None
        if settings.server.startswith("https://"):
            self._ssl = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        text_body: str | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data: bytes | None = None
        headers = {"Accept": "application/json"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif text_body is not None:
            data = text_body.encode()
            headers["Content-Type"] = content_type
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        import urllib.error
        import urllib.request

        url = self.settings.server + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(  # noqa: S310 - URL is the operator's server
                request, timeout=self.settings.timeout, context=self._ssl
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"error": {"message": raw.decode(errors="replace").strip() or exc.reason}}
            error = ApiError(exc.code, body)
            error.retry_after = exc.headers.get("Retry-After")
            raise error from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the global CP at {self.settings.server}: {reason}") from None

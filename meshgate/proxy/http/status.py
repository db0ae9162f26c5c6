"""Status lines and the short error responses the proxy itself sends."""

from __future__ import annotations

from typing import Final

REASONS: Final = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}  # fmt: skip


class HttpError(Exception):
    """A request the proxy answers itself: ``status``, a short ``cause`` (the body's first line)
    and ``kind`` (the metric label: ``bad_request``, ``no_endpoint``, ``connect``...)."""

    def __init__(self, status: int, cause: str, kind: str = "") -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause
        self.kind = kind or f"status_{status}"


def error_response(status: int, cause: str, request_id: str = "", *, close: bool = True) -> bytes:
    """A complete plain-text response naming the cause and the request id."""
    lines = [cause]
    if request_id:
        lines.append(f"request id: {request_id}")
    body = ("\n".join(lines) + "\n").encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
        + (f"x-request-id: {request_id}\r\n" if request_id else "")
        + ("connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode("latin-1") + body

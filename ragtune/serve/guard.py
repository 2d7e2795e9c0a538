"""The outermost layer: check the API key before a byte of the body is read, and bound the body's size.

A plain ASGI middleware rather than a route dependency because FastAPI reads and parses a request's
body before its dependencies run, and Content-Length alone does not bound a chunked body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from ragtune.serve.auth import key_matches

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/health", "/")
UPLOADS = "/v1/files"  # bounded by serve.max_upload_bytes while the upload is read (files.py)


class Guard:
    def __init__(self, app: Any, api_key: str, limit: int, error: Callable[..., JSONResponse]) -> None:
        self.app, self.api_key, self.limit, self.error = app, api_key, limit, error

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            if not key_matches(self.api_key, headers.get("authorization")):
                response = self.error(
                    401,
                    "missing or wrong API key: send `Authorization: Bearer KEY`",
                    kind="authentication_error",
                    code="invalid_api_key",
                )
                return await response(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or path.startswith(UPLOADS):
            return await self.app(scope, receive, send)
        # Read the whole (small) body here, refusing it as soon as it passes the limit, then replay it.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                response = self.error(
                    413, f"request body is over serve.max_request_bytes={self.limit} bytes", code="request_too_large"
                )
                return await response(scope, receive, send)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls: disconnect detection while streaming

        return await self.app(scope, replay, send)

"""The outermost layers: deadlines on reading a request, then the API key checked before a byte of the body
is read, and the body's size bounded.

The key check is a plain ASGI middleware rather than a route dependency because FastAPI reads and parses a
request's body before its dependencies run, and Content-Length alone does not bound a chunked body. The
deadlines live in the HTTP protocol, below the app: uvicorn reads a request with no deadline of its own (its
keep-alive timeout runs only between requests), so a client sending half a request held its socket forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from models.config import ServeConfig
from ragtune.serve.auth import key_matches

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/health", "/")
# Bounded by serve.max_upload_bytes while the upload is read (files.py, library.py), not by max_request_bytes.
UPLOADS = ("/v1/files", "/v1/library")


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


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with its connection closed when a request's headers are not all in within
    `header_timeout_s` (of the connection, or of the previous answer), or its body stops arriving for
    `body_timeout_s` while the server waits for it."""

    header_timeout_s = ServeConfig.header_timeout_s
    body_timeout_s = ServeConfig.body_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers" or "body" while a deadline runs
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch(restart_body=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self, restart_body: bool = False) -> None:
        """Arm the deadline that the client's side of the exchange calls for, or none."""
        state = self.conn.their_state
        if state is h11.IDLE and self._waiting_for != "headers":
            # Counted from here, not from the last byte: a header trickled a byte at a time still runs out.
            self._arm("headers", self.header_timeout_s)
        elif state is h11.SEND_BODY and (self._waiting_for != "body" or restart_body):
            self._arm("body", self.body_timeout_s)
        elif state not in (h11.IDLE, h11.SEND_BODY):  # the request is in: the answer may take its time
            self._disarm()

    def _arm(self, waiting_for: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, None

    def _expired(self) -> None:
        if self._waiting_for == "body" and self.flow.read_paused:
            # The server is not reading (its buffer is full): that wait is the server's, not the client's.
            return self._arm("body", self.body_timeout_s)
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()  # a request still being read sees http.disconnect


def protocol(limits: ServeConfig) -> type[DeadlineProtocol]:
    """The protocol class uvicorn builds per connection, with `limits`' deadlines (uvicorn takes a class)."""
    deadlines = {"header_timeout_s": limits.header_timeout_s, "body_timeout_s": limits.body_timeout_s}
    return type("ServeProtocol", (DeadlineProtocol,), deadlines)


def uvicorn_options(limits: ServeConfig) -> dict[str, Any]:
    """What every uvicorn this package starts is given, `ragtune serve` and the in-thread one alike."""
    return {"http": protocol(limits), "log_level": "warning", "access_log": False}

"""The HTTP API as a route table: OpenAI-shaped routes over the Engine, a key on every route but /health and the page.

Errors use the OpenAI error shape ({"error": {"message", "type", "param", "code"}}) so the official
client raises its usual exceptions. Nothing from a request is executed, logged or echoed back.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from models.config import ServeConfig
from models.errors import (
    AdapterError,
    ConfigError,
    IndexStateError,
    IndexUnavailableError,
    RagtuneError,
    RemoteModelError,
)
from models.paths import index_dir
from ragtune import __version__
from ragtune.serve.answers import base64_floats, embedding_inputs, respond, sampling
from ragtune.serve.conversations import (
    ConversationNotFoundError,
    ConversationStoreError,
    TooManyConversationsError,
    TooManyTurnsError,
)
from ragtune.serve.engine import BusyError, Engine, UnknownModelError
from ragtune.serve.errors import ApiError, ErrorReply, error, model_label
from ragtune.serve.guard import Guard
from ragtune.serve.schemas import ChatRequest, EmbeddingsRequest

STATIC = Path(__file__).parent / "static"
UNREACHABLE = "the index engine at index.uri does not answer; check that it is up"
IndexState = tuple[str, str | None, str | None]  # ok/missing/unreachable/damaged, the generation, the problem


class IndexCheck:
    """The index lookup /health reports: off the event loop, given serve.health_timeout_s, one at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lookup: asyncio.Future[IndexState] | None = None

    async def __call__(self) -> IndexState:
        # A lookup that hangs (an engine that never answers) keeps its thread: later checks wait on that
        # same lookup rather than pile up threads behind it.
        if self._lookup is None or self._lookup.done() or self._lookup.get_loop() is not asyncio.get_running_loop():
            self._lookup = asyncio.ensure_future(run_in_threadpool(self.look_up))
            self._lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
        timeout = self.engine.config.serve.health_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(self._lookup), timeout)
        except asyncio.TimeoutError:
            late = f"the index did not answer within serve.health_timeout_s={timeout} s"
            return "unreachable", None, f"{late}; check the engine at index.uri and the index folder's CURRENT"

    def look_up(self) -> IndexState:
        # CURRENT must be a plain file: reading a FIFO put in its place would wait for a writer forever.
        try:
            if not stat.S_ISREG((index_dir(self.engine.config) / "CURRENT").stat().st_mode):
                return "damaged", None, None
        except FileNotFoundError:
            pass  # no index yet, or one its engine (index.uri) serves alone
        except OSError:
            return "damaged", None, None
        try:
            generation = self.engine.index_generation()
        except (IndexUnavailableError, ConfigError):  # index.uri's engine is down, or was never reached
            return "unreachable", None, UNREACHABLE
        except IndexStateError:
            return "damaged", None, None
        return ("ok" if generation else "missing"), generation, None


def bounded_messages(body: ChatRequest, limits: ServeConfig) -> list[dict[str, str]]:
    """The request's messages as plain dicts, within serve.max_messages (400 otherwise, before any is tokenized)."""
    if len(body.messages) > limits.max_messages:
        raise ApiError(
            400,
            f"messages: {len(body.messages)} messages is over this server's limit of {limits.max_messages} "
            "(serve.max_messages); send a shorter conversation",
            code="too_many_messages",
            param="messages",
        )
    return [m.model_dump() for m in body.messages]


class Handlers:
    """The routes' handlers over one loaded engine; the key is checked once, by Guard, before any of them runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.index_check = IndexCheck(engine)

    async def health(self) -> dict[str, Any]:
        # Answers without a key, so it names no path or address (the key to check, index.uri, instead);
        # a damaged, unreachable or hung index is reported, not a 500 nor a wait.
        engine = self.engine
        index, generation, problem = await self.index_check()
        return {
            "status": "ok",
            "version": __version__,
            "llm": model_label(engine.config.llm.model),
            "embedder": model_label(engine.config.embedder.model),
            "index": index,
            "index_generation": generation,
            **({"index_error": problem} if problem else {}),
        }

    async def models(self) -> dict[str, Any]:
        ids = await run_in_threadpool(self.engine.model_ids)
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "ragtune"} for i in ids],
        }

    async def embeddings(self, body: EmbeddingsRequest) -> dict[str, Any]:
        engine = self.engine
        texts = embedding_inputs(body, engine.config.serve)
        release = engine.admit()  # embeddings share the CPU with generation: same admission limit
        try:
            vectors, tokens = await run_in_threadpool(engine.embed, texts)
        finally:
            release()
        encode = base64_floats if body.encoding_format == "base64" else np.ndarray.tolist
        return {
            "object": "list",
            "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def chat(self, body: ChatRequest, request: Request) -> Any:
        engine = self.engine
        messages = bounded_messages(body, engine.config.serve)
        params = sampling(body, engine)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return await respond(engine, body.model, messages, params, request, body.stream, usage)

    async def openapi(self, request: Request) -> dict[str, Any]:
        return request.app.openapi()

    async def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html")


class Route(NamedTuple):
    """One row of the route table."""

    method: str
    path: str
    handler: str  # the Handlers method that answers it
    in_schema: bool = True


# Registered in this order, before the extra routers (files, jobs, conversations); /openapi.json and the page
# stay out of the schema.
ROUTES = (
    Route("GET", "/health", "health"),
    Route("GET", "/openapi.json", "openapi", in_schema=False),
    Route("GET", "/v1/models", "models"),
    Route("POST", "/v1/embeddings", "embeddings"),
    Route("POST", "/v1/chat/completions", "chat"),
    Route("GET", "/", "page", in_schema=False),
)


def invalid(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if not where:  # the body as a whole: not JSON, or not an object
        return error(400, "the request body should be a JSON object sent with Content-Type: application/json")
    return error(400, f"{where}: {first.get('msg', 'invalid request')}", param=where)


def http_error(exc: HTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail), code=None)


def api_error(exc: ApiError) -> JSONResponse:
    return error(exc.status, exc.message, exc.kind, exc.code, exc.param)


# Each error type and the reply it gets. An exception takes the entry of its nearest class, so a RagtuneError
# subclass listed here keeps its own status and the plain RagtuneError entry covers the rest.
ERRORS: dict[type[Exception], Callable[[Any], JSONResponse]] = {
    RequestValidationError: invalid,
    HTTPException: http_error,
    ApiError: api_error,
    UnknownModelError: ErrorReply(404, code="model_not_found", param="model"),
    ConversationNotFoundError: ErrorReply(404, code="conversation_not_found"),
    TooManyTurnsError: ErrorReply(403, code="too_many_turns"),
    TooManyConversationsError: ErrorReply(403, code="too_many_conversations"),
    # The conversations file went bad while serving (it is checked when the server starts).
    ConversationStoreError: ErrorReply(503, "server_error", "conversations_unavailable"),
    BusyError: ErrorReply(429, "rate_limit_error", "busy", message=lambda exc: f"server busy: {exc}; retry shortly"),
    # Not the client's fault: the server has no usable index (none built yet, or damaged).
    IndexStateError: ErrorReply(503, "server_error", "index_unavailable"),
    # Not the client's fault either: an adapter on the server is damaged or unsafe.
    AdapterError: ErrorReply(503, "server_error", "adapter_unavailable"),
    # llm.backend=openai and its server is down, too slow or failing: retry later, as with a busy index.
    RemoteModelError: ErrorReply(503, "server_error", "model_unavailable"),
    RagtuneError: ErrorReply(400),
    # A bug, not the client's doing: the OpenAI shape and no details here; the server log has the traceback.
    Exception: ErrorReply(
        500,
        "server_error",
        message=lambda exc: f"internal error ({type(exc).__name__}); the server log has the details",
    ),
}


def respond_with(reply: Callable[[Any], JSONResponse]) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """An exception handler as Starlette calls it, around one entry of ERRORS."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return reply(exc)

    return handle


def create_app(engine: Engine, api_key: str, extra_routers: list[APIRouter] | None = None) -> FastAPI:
    # No /docs or /redoc: they load their UI from a CDN, which air-gapped sites cannot reach. The schema
    # itself is served at /openapi.json, behind the key like everything else.
    app = FastAPI(
        title="ragtune",
        version=__version__,
        description="Local OpenAI-compatible API over ragtune.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(Guard, api_key=api_key, limit=engine.config.serve.max_request_bytes, error=error)
    app.state.serve = engine.config.serve  # the read deadlines of the uvicorn that runs it (guard.uvicorn_options)
    for kind, reply in ERRORS.items():
        app.add_exception_handler(kind, respond_with(reply))
    handlers = Handlers(engine)
    for route in ROUTES:
        endpoint = getattr(handlers, route.handler)
        app.add_api_route(route.path, endpoint, methods=[route.method], include_in_schema=route.in_schema)
    for router in extra_routers or []:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

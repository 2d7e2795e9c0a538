"""The HTTP API: OpenAI-shaped routes over the Engine, an API key on every route but /health and the page.

Errors use the OpenAI error shape ({"error": {"message", "type", "param", "code"}}) so the official
client raises its usual exceptions. Nothing from a request is executed, logged or echoed back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from models.errors import (
    AdapterError,
    ConfigError,
    IndexStateError,
    IndexUnavailableError,
    RagtuneError,
    RemoteModelError,
)
from ragtune import __version__
from ragtune.serve.answers import (
    END,
    base64_floats,
    completion,
    embedding_inputs,
    gone,
    sampling,
    stream_events,
    whole_answer,
)
from ragtune.serve.engine import BusyError, Engine, UnknownModelError
from ragtune.serve.errors import ApiError, error, model_label
from ragtune.serve.guard import Guard
from ragtune.serve.schemas import ChatRequest, EmbeddingsRequest

STATIC = Path(__file__).parent / "static"


def create_app(engine: Engine, api_key: str, extra_routers: list[APIRouter] | None = None) -> FastAPI:
    # No /docs or /redoc: they load their UI from a CDN, which air-gapped sites cannot reach. The schema
    # itself is served below, behind the key like everything else.
    app = FastAPI(
        title="ragtune",
        version=__version__,
        description="Local OpenAI-compatible API over ragtune.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(Guard, api_key=api_key, limit=engine.config.serve.max_request_bytes, error=error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if not where:  # the body as a whole: not JSON, or not an object
            return error(400, "the request body should be a JSON object sent with Content-Type: application/json")
        return error(400, f"{where}: {first.get('msg', 'invalid request')}", param=where)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), code=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.kind, exc.code)

    @app.exception_handler(UnknownModelError)
    async def unknown_model(_: Request, exc: UnknownModelError) -> JSONResponse:
        return error(404, str(exc), code="model_not_found", param="model")

    @app.exception_handler(BusyError)
    async def busy(_: Request, exc: BusyError) -> JSONResponse:
        return error(429, f"server busy: {exc}; retry shortly", kind="rate_limit_error", code="busy")

    @app.exception_handler(IndexStateError)
    async def index_unavailable(_: Request, exc: IndexStateError) -> JSONResponse:
        # Not the client's fault: the server has no usable index (none built yet, or damaged).
        return error(503, str(exc), kind="server_error", code="index_unavailable")

    @app.exception_handler(AdapterError)
    async def adapter_unavailable(_: Request, exc: AdapterError) -> JSONResponse:
        # Not the client's fault either: an adapter on the server is damaged or unsafe.
        return error(503, str(exc), kind="server_error", code="adapter_unavailable")

    @app.exception_handler(RemoteModelError)
    async def model_unavailable(_: Request, exc: RemoteModelError) -> JSONResponse:
        # llm.backend=openai and its server is down, too slow or failing: retry later, as with a busy index.
        return error(503, str(exc), kind="server_error", code="model_unavailable")

    @app.exception_handler(RagtuneError)
    async def ragtune_error(_: Request, exc: RagtuneError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's doing: the OpenAI shape and no details here; the server log has the traceback.
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details", "server_error")

    # The key is checked once, by Guard, before any route (or body) is reached.
    api = APIRouter(prefix="/v1")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # Answers without a key, so it names no path or address (the key to check, index.uri, instead);
        # a damaged or unreachable index is reported, not a 500.
        generation, problem = None, None
        try:
            generation = engine.index_generation()
            index = "ok" if generation else "missing"
        except (IndexUnavailableError, ConfigError):  # index.uri's engine is down, or was never reached
            index, problem = "unreachable", "the index engine at index.uri does not answer; check that it is up"
        except IndexStateError:
            index = "damaged"
        return {
            "status": "ok",
            "version": __version__,
            "llm": model_label(engine.config.llm.model),
            "embedder": model_label(engine.config.embedder.model),
            "index": index,
            "index_generation": generation,
            **({"index_error": problem} if problem else {}),
        }

    @api.get("/models")
    async def models() -> dict[str, Any]:
        ids = await run_in_threadpool(engine.model_ids)
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "ragtune"} for i in ids],
        }

    @api.post("/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict[str, Any]:
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

    @api.post("/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        params = sampling(body, engine)
        messages = [m.model_dump() for m in body.messages]
        release = engine.admit()  # held until the answer is complete, or the stream ends or breaks
        try:
            reply = await run_in_threadpool(engine.reply, body.model, messages, params)
            # Retrieval and prompt checks run on the first step: do it before the 200 headers go out, so
            # their errors (no index, prompt too long) reach the client as ordinary HTTP errors.
            first = await run_in_threadpool(next, reply.pieces, END) if body.stream else END
        except BaseException:
            release()
            raise
        if not body.stream:
            try:
                text = await whole_answer(reply, request)
            finally:
                release()
            return completion(body.model, text, reply) if text is not None else gone()
        return StreamingResponse(
            stream_events(body, reply, first, request, release),
            media_type="text/event-stream",
            background=BackgroundTask(release),
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(api)
    for router in extra_routers or []:
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

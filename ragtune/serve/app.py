"""The HTTP API: OpenAI-shaped routes over the Engine, an API key on every route but /health and the page.

Errors use the OpenAI error shape ({"error": {"message", "type", "param", "code"}}) so the official
client raises its usual exceptions. Nothing from a request is executed, logged or echoed back.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from models.config import ServeConfig
from models.errors import AdapterError, IndexError_, RagtuneError
from models.generate import SamplingParams
from ragtune import __version__
from ragtune.serve.engine import BusyError, Engine, Reply, UnknownModelError
from ragtune.serve.guard import Guard
from ragtune.serve.schemas import ChatRequest, EmbeddingsRequest, quoted

STATIC = Path(__file__).parent / "static"
_END = object()


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": public(message), "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


# An absolute path, but not one of this API's own routes (`GET /v1/models`), which messages name on purpose.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?!v1/)(?:[^\s'\"`(),;]+/)+([^\s'\"`(),;]*)")


def public(message: str) -> str:
    """A message fit for a client: where files live on the server is the server's business (its log has it)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(folder)", message)


def model_label(model: str) -> str:
    """A preset's name as it is; a local model path by its last part only."""
    return Path(model).name if "/" in model else model


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


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

    @app.exception_handler(IndexError_)
    async def index_unavailable(_: Request, exc: IndexError_) -> JSONResponse:
        # Not the client's fault: the server has no usable index (none built yet, or damaged).
        return error(503, str(exc), kind="server_error", code="index_unavailable")

    @app.exception_handler(AdapterError)
    async def adapter_unavailable(_: Request, exc: AdapterError) -> JSONResponse:
        # Not the client's fault either: an adapter on the server is damaged or unsafe.
        return error(503, str(exc), kind="server_error", code="adapter_unavailable")

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
        # Answers without a key, so it names no path; a damaged index is reported, not a 500.
        try:
            generation = engine.index_generation()
            index = "ok" if generation else "missing"
        except IndexError_:
            generation, index = None, "damaged"
        return {
            "status": "ok",
            "version": __version__,
            "llm": model_label(engine.config.llm.model),
            "embedder": model_label(engine.config.embedder.model),
            "index": index,
            "index_generation": generation,
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
        encode = _base64_floats if body.encoding_format == "base64" else np.ndarray.tolist
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
            first = await run_in_threadpool(next, reply.pieces, _END) if body.stream else _END
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


def _base64_floats(vector: Any) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def embedding_inputs(body: EmbeddingsRequest, limits: ServeConfig) -> list[str]:
    """The request's texts, within serve.max_embedding_inputs and serve.max_embedding_chars (400 otherwise)."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not t for t in texts):
        raise ApiError(400, "input: give one non-empty string or a list of them")
    if len(texts) > limits.max_embedding_inputs:
        raise ApiError(
            400,
            f"input: {len(texts)} items is over this server's limit of {limits.max_embedding_inputs} "
            "(serve.max_embedding_inputs); send them in several requests",
            code="too_many_inputs",
        )
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > limits.max_embedding_chars:
        where = "input" if isinstance(body.input, str) else f"input[{longest}]"
        raise ApiError(
            400,
            f"{where}: {len(texts[longest])} characters is over this server's limit of {limits.max_embedding_chars} "
            "(serve.max_embedding_chars); split the text",
            code="input_too_long",
        )
    return texts


def sampling(body: ChatRequest, engine: Engine) -> SamplingParams:
    llm, limit = engine.config.llm, engine.config.serve.max_tokens_limit
    field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = body.max_completion_tokens or body.max_tokens or llm.max_new_tokens
    if max_tokens > limit:
        raise ApiError(
            400,
            f"{field}={quoted(max_tokens)} is over this server's limit of {limit} (serve.max_tokens_limit)",
            code="max_tokens_too_large",
        )
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    temperature = llm.temperature if body.temperature is None else body.temperature
    return SamplingParams(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=body.top_p or llm.top_p,
        stop=stop,
        seed=llm.seed if body.seed is None else body.seed,
    )


def usage_json(reply: Reply) -> dict[str, int]:
    prompt = reply.usage.prompt_tokens if reply.usage else 0
    completion_tokens = reply.usage.completion_tokens if reply.usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def sources_json(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"number": s.number, "path": s.path, "chunk": s.chunk, "locator": s.locator, "score": s.score, "text": s.text}
        for s in reply.sources
    ]


def finish_reason(reply: Reply) -> str:
    return reply.usage.finish_reason if reply.usage else "stop"


def completion(model: str, text: str, reply: Reply) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(reply)}
        ],
        "usage": usage_json(reply),
        "sources": sources_json(reply),  # extra field: the official client keeps it in model_extra
    }


def gone() -> JSONResponse:
    # Nobody reads this: the client hung up. It only ends the request cleanly.
    return error(400, "the client closed the connection before the answer was complete", code="client_gone")


async def whole_answer(reply: Reply, request: Request) -> str | None:
    """The complete answer text, or None as soon as the client has gone (its generation is then stopped).

    Piece by piece, as the streamed path does: a generator cannot be closed while another thread runs it,
    so the disconnect is checked between pieces and the generator closed from here.
    """
    pieces, text = reply.pieces, []
    try:
        while (piece := await run_in_threadpool(next, pieces, _END)) is not _END:
            text.append(piece)
            if await request.is_disconnected():
                return None
        return "".join(text)
    finally:
        with anyio.CancelScope(shield=True):  # see stream_events
            await run_in_threadpool(pieces.close)


async def stream_events(
    body: ChatRequest, reply: Reply, first: Any, request: Request, release: Any
) -> AsyncIterator[str]:
    """Server-sent events in the OpenAI chunk format; a disconnect stops generation and frees the slot."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    pieces, piece = reply.pieces, first
    try:
        yield chunk({"role": "assistant", "content": ""})
        while piece is not _END:
            yield chunk({"content": piece})
            if await request.is_disconnected():
                return
            piece = await run_in_threadpool(next, pieces, _END)
        extra: dict[str, Any] = {"sources": sources_json(reply)}
        if body.stream_options and body.stream_options.include_usage:
            extra["usage"] = usage_json(reply)
        yield chunk({}, finish_reason(reply), **extra)
        yield "data: [DONE]\n\n"
    except RagtuneError as exc:  # after the headers: the error travels as an event, as OpenAI's API does
        yield f"data: {json.dumps({'error': {'message': public(str(exc)), 'type': 'server_error', 'code': None}})}\n\n"
    finally:
        # Shielded: on a disconnect this task is already cancelled, and an unshielded await would raise at
        # once, leaving the model generating for nobody.
        with anyio.CancelScope(shield=True):
            try:
                await run_in_threadpool(pieces.close)  # ends generation in its worker thread
            finally:
                release()

"""Shaping answers for the API: sampling settings from a request, OpenAI completion and stream chunks, the
sources as a client sees them, embeddings input checks; a client that hangs up stops its generation, streamed
or not. Chat completions and conversation turns answer through the same `respond`."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import PurePath
from typing import Any

import anyio
import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from models.answer import Token
from models.config import ServeConfig
from models.errors import RagtuneError
from models.generate import SamplingParams
from ragtune.serve.documents import document_id, shown_path
from ragtune.serve.engine import END, Engine, Reply
from ragtune.serve.errors import ApiError, error, public
from ragtune.serve.schemas import EmbeddingsRequest, Sampling, quoted


def base64_floats(vector: Any) -> str:
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


def sampling(body: Sampling, engine: Engine) -> SamplingParams:
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
    usage = reply.answer.usage
    prompt = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def document_roots(engine: Engine, paths: set[str]) -> dict[str, str]:
    """The folder each of `paths` was indexed from, as the served generation's chunk store records it; a path it
    does not know, or a generation read from an engine alone (which keeps no documents table), is left out."""
    index = getattr(engine.retriever, "index", None)
    if not paths or index is None:
        return {}
    try:
        store = index.snapshot().store
    except RagtuneError:  # the index went away since: the sources are shown by file name
        return {}
    lookup = getattr(store, "document", None)
    if lookup is None:
        return {}
    return {path: document.root for path in paths if (document := lookup(path)) is not None}


def sources_json(reply: Reply, roots: Mapping[str, str]) -> list[dict[str, Any]]:
    """The numbered sources; for a checked answer each says whether the answer cites it and whether it supports it.
    `path` is relative to the folder the document was indexed from (`roots`; its file name where that is not
    known): no absolute server path leaves the server. `document` is its id (ragtune/serve/documents.py)."""
    cited, supports = set(reply.answer.cited), set(reply.answer.supports)
    return [
        {
            "number": s.number,
            "path": shown_path(s.path, roots[s.path]) if s.path in roots else PurePath(s.path).name,
            "document": document_id(s.path),
            "chunk": s.chunk,
            "locator": s.locator,
            "score": s.score,
            "text": s.text,
            "cited": s.number in cited,
            "supports": s.number in supports,
        }
        for s in reply.answer.sources
    ]


def grounding_json(reply: Reply) -> dict[str, Any]:
    """rag and hybrid: `refused` (the fixed "not in the documents" answer), the cited source numbers, the
    answer's support verdict and each sentence's (its text, supporting source and span in that source)."""
    if not reply.checked:
        return {}
    data = reply.answer.to_json()
    return {key: data[key] for key in ("refused", "cited", "support", "sentences")}


def shown_fields(engine: Engine, reply: Reply) -> dict[str, Any]:
    """The extra fields a finished answer carries: `sources`, and for rag and hybrid the grounding."""
    roots = document_roots(engine, {s.path for s in reply.answer.sources})
    return {"sources": sources_json(reply, roots), **grounding_json(reply)}


def finish_reason(reply: Reply) -> str:
    usage = reply.answer.usage
    return usage.finish_reason if usage else "stop"


def completion(model: str, text: str, reply: Reply, shown: dict[str, Any]) -> dict[str, Any]:
    # rag and hybrid: the record's text, so a refusal reads in its one fixed form even when it streamed as the
    # model's words (rag.refuse_unsupported off).
    text = reply.answer.text if reply.checked else text
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(reply)}
        ],
        "usage": usage_json(reply),
        **shown,  # extra fields (shown_fields): the official client keeps them in model_extra
    }


def gone() -> JSONResponse:
    # Nobody reads this: the client hung up. It only ends the request cleanly.
    return error(400, "the client closed the connection before the answer was complete", code="client_gone")


async def whole_answer(reply: Reply, request: Request) -> str | None:
    """The complete answer text, or None as soon as the client has gone (its generation is then stopped).

    Piece by piece, as the streamed path does: a generator cannot be closed while another thread runs it,
    so the disconnect is checked between pieces and the generator closed from here.
    """
    text = []
    try:
        while (event := await run_in_threadpool(next, reply, END)) is not END:
            if isinstance(event, Token):
                text.append(event.text)
            if await request.is_disconnected():
                return None
        return "".join(text)
    finally:
        with anyio.CancelScope(shield=True):  # see stream_events
            await run_in_threadpool(reply.close)


class Delivery:
    """What becomes of an answer besides reaching its client. A chat completion keeps nothing; a conversation
    turn (conversation_routes.py) is stored."""

    def kept(self, reply: Reply, shown: dict[str, Any], complete: bool) -> dict[str, Any]:
        """Called once: when the answer ends (`complete`) or its client has gone. Returns the extra fields of the
        last chunk; an error here (a RagtuneError) reaches the client as an error event."""
        return {}

    def whole(self, model: str, text: str, reply: Reply, shown: dict[str, Any]) -> Any:
        """The reply body of a finished answer that was not streamed."""
        return {**completion(model, text, reply, shown), **self.kept(reply, shown, True)}


async def respond(
    engine: Engine,
    model: str,
    messages: list[dict[str, str]],
    params: SamplingParams,
    request: Request,
    stream: bool,
    include_usage: bool = False,
    delivery: Delivery | None = None,
) -> Any:
    """Answer `messages` with `model` under admission: a whole completion, or a stream of OpenAI chunks."""
    delivery = delivery or Delivery()
    release = engine.admit()  # held until the answer is complete, or the stream ends or breaks
    try:
        reply = await run_in_threadpool(engine.reply, model, messages, params)
        # Retrieval and prompt checks run on the first step: do it before the 200 headers go out, so
        # their errors (no index, prompt too long) reach the client as ordinary HTTP errors.
        first = await run_in_threadpool(reply.begin) if stream else END
    except BaseException:
        release()
        raise
    if stream:
        return StreamingResponse(
            stream_events(engine, model, reply, first, request, release, include_usage, delivery),
            media_type="text/event-stream",
            background=BackgroundTask(release),
        )
    try:
        text = await whole_answer(reply, request)
    finally:
        release()
    if text is None:
        await run_in_threadpool(keep_unfinished, engine, reply, delivery)
        return gone()
    shown = await run_in_threadpool(shown_fields, engine, reply)
    return await run_in_threadpool(delivery.whole, model, text, reply, shown)


async def stream_events(
    engine: Engine,
    model: str,
    reply: Reply,
    first: Any,
    request: Request,
    release: Any,
    include_usage: bool = False,
    delivery: Delivery | None = None,
) -> AsyncIterator[str]:
    """Server-sent events in the OpenAI chunk format; a disconnect stops generation and frees the slot."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    delivery = delivery or Delivery()

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    event, ended = first, False  # ended: the answer was delivered whole, or failed (nothing to keep then)
    try:
        yield chunk({"role": "assistant", "content": ""})
        while event is not END:
            if isinstance(event, Token) and event.text:  # other events (sources, progress, verdict): no text
                yield chunk({"content": event.text})
            if await request.is_disconnected():
                return
            event = await run_in_threadpool(next, reply, END)
        ended = True
        shown = await run_in_threadpool(shown_fields, engine, reply)
        extra: dict[str, Any] = {**shown, **await run_in_threadpool(delivery.kept, reply, shown, True)}
        if include_usage:
            extra["usage"] = usage_json(reply)
        yield chunk({}, finish_reason(reply), **extra)
        yield "data: [DONE]\n\n"
    except RagtuneError as exc:  # after the headers: the error travels as an event, as OpenAI's API does
        ended = True
        yield f"data: {json.dumps({'error': {'message': public(str(exc)), 'type': 'server_error', 'code': None}})}\n\n"
    finally:
        # Shielded: on a disconnect this task is already cancelled, and an unshielded await would raise at
        # once, leaving the model generating for nobody.
        with anyio.CancelScope(shield=True):
            try:
                await run_in_threadpool(reply.close)  # ends generation in its worker thread
            finally:
                release()
            if not ended:  # the client left: what it was given so far is kept, marked incomplete
                await run_in_threadpool(keep_unfinished, engine, reply, delivery)


def keep_unfinished(engine: Engine, reply: Reply, delivery: Delivery) -> None:
    try:
        delivery.kept(reply, shown_fields(engine, reply), False)
    except RagtuneError:  # the conversation was deleted meanwhile, say: nobody is left to tell
        pass

"""The /v1/conversations routes: conversations kept by the server, each question answered as a chat completion
over the conversation so far and stored as a turn when its answer ends (or, incomplete, when its client leaves)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ragtune.serve.answers import Delivery, respond, sampling
from ragtune.serve.conversations import ConversationStore
from ragtune.serve.engine import Engine, Reply
from ragtune.serve.errors import ApiError
from ragtune.serve.schemas import ConversationPatch, ConversationRequest, TurnRequest


def conversation_messages(earlier: list[tuple[str, str]], question: str) -> list[dict[str, str]]:
    """The earlier turns as user and assistant messages, then the new question."""
    messages = []
    for asked, answered in earlier:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    return [*messages, {"role": "user", "content": question}]


def turn_record(question: str, model: str, reply: Reply, shown: dict[str, Any], complete: bool) -> dict[str, Any]:
    """A turn as stored: the answer so far, its sources and, once it is complete, its grounding."""
    answer = reply.answer
    grounded = complete and "refused" in shown  # rag and hybrid, and only once the answer's check has run
    return {
        "question": question,
        "answer": answer.text.strip(),
        "model": model,
        "query": getattr(answer, "query", None),  # the standalone question rag and hybrid retrieved with
        "sources": shown["sources"],
        "refused": shown["refused"] if grounded else None,
        "cited": shown["cited"] if grounded else [],
        "support": shown["support"] if grounded else None,
        "sentences": shown["sentences"] if grounded else [],
        "timings": dict(answer.timings),
        "complete": complete,
    }


class TurnDelivery(Delivery):
    """A conversation's answer: stored as its next turn, named in the last chunk."""

    def __init__(self, store: ConversationStore, conversation: str, question: str, model: str) -> None:
        self.store, self.conversation, self.question, self.model = store, conversation, question, model
        self.turn: dict[str, Any] | None = None

    def kept(self, reply: Reply, shown: dict[str, Any], complete: bool) -> dict[str, Any]:
        record = turn_record(self.question, self.model, reply, shown, complete)
        self.turn = self.store.add_turn(self.conversation, record)
        return {"query": record["query"], "conversation": self.conversation, "turn": self.turn["index"]}

    def whole(self, model: str, text: str, reply: Reply, shown: dict[str, Any]) -> Any:
        self.kept(reply, shown, True)
        return {"conversation": self.conversation, "turn": self.turn}


def blank(field: str, value: str) -> None:
    if not value.strip():
        raise ApiError(400, f"{field}: should hold some text, got only white space or nothing", param=field)


def conversations_router(store: ConversationStore, engine: Engine) -> APIRouter:
    """The conversation routes over `store`, answering with `engine`; the app adds the API-key check."""
    router = APIRouter()
    limits = engine.config.serve

    @router.post("/v1/conversations")
    def create_conversation(body: ConversationRequest) -> dict[str, Any]:
        title = body.title.strip() if body.title and body.title.strip() else None
        return store.create(title, body.model)

    @router.get("/v1/conversations")
    def list_conversations() -> dict[str, Any]:
        return {"object": "list", "data": store.newest_first()}

    @router.get("/v1/conversations/{conversation_id}")
    def retrieve_conversation(conversation_id: str) -> dict[str, Any]:
        return store.get(conversation_id)

    @router.patch("/v1/conversations/{conversation_id}")
    def rename_conversation(conversation_id: str, body: ConversationPatch) -> dict[str, Any]:
        blank("title", body.title)
        return store.rename(conversation_id, body.title.strip())

    @router.delete("/v1/conversations/{conversation_id}")
    def delete_conversation(conversation_id: str) -> dict[str, Any]:
        return store.delete(conversation_id)

    @router.post("/v1/conversations/{conversation_id}/turns")
    async def ask(conversation_id: str, body: TurnRequest, request: Request) -> Any:
        blank("question", body.question)
        params = sampling(body, engine)
        # The most recent turns that fit serve.max_messages beside the new question, two messages each.
        earlier = await run_in_threadpool(store.recent, conversation_id, (limits.max_messages - 1) // 2)
        await run_in_threadpool(store.check_room, conversation_id)  # a full conversation is refused before answering
        messages = conversation_messages(earlier, body.question)
        delivery = TurnDelivery(store, conversation_id, body.question, body.model)
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return await respond(engine, body.model, messages, params, request, body.stream, usage, delivery)

    return router

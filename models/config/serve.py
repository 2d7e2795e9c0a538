"""The serve and eval sections: the HTTP API's address and bounds, and how eval and compare answer and judge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from models.config.choices import check


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # File holding the API key; required for any host other than loopback. Without it a random key is
    # made at start, written to $RAGTUNE_HOME/serve/api-key (mode 0600) and printed once.
    api_key_file: str | None = None
    # Requests admitted at once (serve.parallel generate, the rest wait); more get 429.
    max_queue: int = 8
    # Largest JSON request body, and largest training file upload, in bytes.
    max_request_bytes: int = 1_000_000
    max_upload_bytes: int = 50_000_000
    # Largest max_tokens a request may ask for.
    max_tokens_limit: int = 1024
    # Embedding inputs in one request (OpenAI's limit), and characters in each one.
    max_embedding_inputs: int = 2048
    max_embedding_chars: int = 32_768
    # Uploaded training files kept at once, and their total size in bytes; DELETE /v1/files/ID frees room.
    max_files: int = 100
    max_upload_total_bytes: int = 1_000_000_000
    # Uploads read and validated at once (each holds a worker thread and a spooled copy); more get 429.
    max_concurrent_uploads: int = 2
    # Messages in one chat request, checked before any is tokenized; more get 400.
    max_messages: int = 256
    # Fine-tuning jobs queued or running at once (finished ones do not count); one more gets 429.
    max_jobs: int = 16
    # Seconds a client has to send a request's headers, counted from its connection (or its previous
    # answer); a connection still short of them is closed, so half-sent requests cannot hold sockets.
    header_timeout_s: float = 10.0
    # Seconds a request's body may go without a byte while the server waits for it; then the connection
    # is closed. Time the server spends not reading (its buffer full) does not count.
    body_timeout_s: float = 30.0
    # Seconds /health waits for the index lookup (CURRENT, or the engine at index.uri) before it reports
    # the index unreachable rather than hang.
    health_timeout_s: float = 5.0
    # Seconds between two writes of a training job's progress to its job.json; a change of state (queued,
    # running, succeeded, failed, cancelled) is written at once. 0: every step is written.
    job_write_interval_s: float = 5.0
    # Requests the llama.cpp engine decodes together (one batch over a KV cache of this many sequences,
    # each llm.context_window + llm.max_new_tokens tokens); 1: one request at a time. Other engines ignore it.
    # 1 by default: on a 2-core CPU batching measured no gain for chat and a loss for rag (BENCHMARKS.md).
    parallel: int = 1
    # Conversations the server keeps (SQLite under $RAGTUNE_HOME/serve), and turns in one of them; a new
    # one past either limit gets 403 until some are deleted.
    max_conversations: int = 10_000
    max_turns: int = 1000
    # The folder the page's document library uploads into and indexes (in the background, as
    # `ragtune ingest` would); null: $RAGTUNE_HOME/library.
    library_dir: str | None = None
    # The folder whose `compare` reports (each a folder holding results.json) the page lists.
    reports_dir: str = "reports"

    def __post_init__(self) -> None:
        check(0 < self.port < 65536, "serve.port", f"should be in 1..65535, got {self.port}")
        limits = ("max_queue", "max_request_bytes", "max_upload_bytes", "max_tokens_limit", "max_embedding_inputs")
        limits += ("max_embedding_chars", "max_files", "max_upload_total_bytes", "max_concurrent_uploads")
        limits += ("max_messages", "max_jobs", "max_conversations", "max_turns", "parallel")
        for key in limits:
            value = getattr(self, key)
            check(value > 0, f"serve.{key}", f"should be positive, got {value}")
        for key in ("header_timeout_s", "body_timeout_s", "health_timeout_s"):
            value = getattr(self, key)
            check(0 < value < math.inf, f"serve.{key}", f"should be a positive, finite number of seconds, got {value}")
        interval = self.job_write_interval_s
        check(0 <= interval < math.inf, "serve.job_write_interval_s", f"should be >= 0 and finite, got {interval}")
        total, one = self.max_upload_total_bytes, self.max_upload_bytes
        check(one <= total, "serve.max_upload_bytes", f"should be <= serve.max_upload_total_bytes={total}, got {one}")


@dataclass(frozen=True)
class JudgeConfig:
    # A local LM that judges whether each written rag/hybrid answer is supported by the passages it read
    # (the likelihood of "yes" against "no" after a fixed prompt, ragtune/compare/judge.py): a preset name, a
    # local Hugging Face folder or a .gguf file, run by llm.backend (auto where that is openai: the judge is
    # local). null: no judge.
    model: str | None = None

    def __post_init__(self) -> None:
        check(self.model is None or bool(self.model.strip()), "eval.judge.model", "should be a model or null")


@dataclass(frozen=True)
class EvalConfig:
    # How `eval` and `compare` answer closed-set questions (`choices` in the question file). loglik: each
    # path scores every choice's log-probability as the start of its reply to its own prompt (retrieved text
    # for rag/hybrid, adapter for finetune/hybrid) and picks the likeliest, as reference harnesses do;
    # generate: the path writes a free-text answer and the choice is parsed from it.
    closed_set: Literal["loglik", "generate"] = "loglik"
    judge: JudgeConfig = field(default_factory=JudgeConfig)

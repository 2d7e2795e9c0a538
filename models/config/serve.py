"""The serve and eval sections: the HTTP API's address and bounds, and how eval and compare answer and judge."""

from __future__ import annotations

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
    # Requests admitted at once (one generates, the rest wait); more get 429.
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

    def __post_init__(self) -> None:
        check(0 < self.port < 65536, "serve.port", f"should be in 1..65535, got {self.port}")
        limits = ("max_queue", "max_request_bytes", "max_upload_bytes", "max_tokens_limit", "max_embedding_inputs")
        limits += ("max_embedding_chars", "max_files", "max_upload_total_bytes", "max_concurrent_uploads")
        for key in limits:
            value = getattr(self, key)
            check(value > 0, f"serve.{key}", f"should be positive, got {value}")
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

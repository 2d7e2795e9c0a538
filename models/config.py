"""The one typed config: frozen dataclasses loaded from YAML plus `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.errors import ConfigError

# The answer modes; models/modes.py says what each one needs (a unit test keeps the two in step).
Mode = Literal["base", "rag", "finetune", "hybrid"]
# Each name is a module behind an interface, chosen by these keys: models/generate.py GENERATOR_BACKENDS,
# rag/index/__init__.py INDEX_BACKENDS and rag/retrieve.py RETRIEVERS (a unit test keeps them in step).
# llm.backend also accepts "auto" (models/generate.py resolve_backend picks one of the engines).
LLMBackend = Literal["transformers", "llamacpp", "openai"]
IndexBackend = Literal["hnswlib", "milvus"]
RetrieverKind = Literal["dense", "lexical", "hybrid"]


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class EmbedderConfig:
    # A preset name (`minilm-l6`) or a local sentence-transformers folder.
    model: str = "minilm-l6"
    # Where embeddings are computed: auto | cpu | cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Chunks embedded per forward pass; larger is faster until memory runs out.
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "embedder.batch_size", f"should be positive, got {self.batch_size}")


@dataclass(frozen=True)
class LLMConfig:
    # A preset name, a local Hugging Face folder or a path to a `.gguf` file.
    model: str = "qwen2.5-coder-0.5b-instruct"
    # The engine that runs the model: auto (llamacpp for a GGUF on the CPU when llama-cpp-python is installed,
    # else transformers), transformers (PyTorch; CPU or CUDA, PEFT adapters), llamacpp (the GGUF as it is,
    # on the CPU; GGUF LoRA adapters) or openai (a remote OpenAI-compatible server such as vLLM at
    # llm.base_url; llm.model then names the base locally).
    backend: Literal["auto", LLMBackend] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto picks bfloat16 where the CPU/GPU computes it natively, float32 otherwise.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: int = 256
    # 0 means greedy decoding (deterministic answers).
    temperature: float = 0.0
    top_p: float = 1.0
    # Prompt tokens the model may see; longer prompts are refused with an error.
    context_window: int = 4096
    # CPU threads; null: torch's default for transformers, the cores this process may use for llamacpp.
    threads: int | None = None
    seed: int = 0
    # llm.backend=openai: the server's address (http://HOST:PORT or http://HOST:PORT/v1).
    base_url: str | None = None
    # llm.backend=openai: a file holding the server's API key (sent as a Bearer token); null sends none.
    api_key_file: str | None = None
    # llm.backend=openai: the model's name on the server; null uses llm.model.
    served_model: str | None = None
    # llm.backend=openai: seconds to wait for a connection to llm.base_url.
    connect_timeout: float = 5.0
    # llm.backend=openai: seconds to wait for any response byte (the first one includes the server's queue).
    read_timeout: float = 120.0
    # llm.backend=openai: retries of a request answered 429 or 503, waiting 0.5 s, 1 s, 2 s, ... between them.
    max_retries: int = 3
    # Speculative decoding: off, or prompt_lookup (draft tokens copied from the prompt; llamacpp only).
    speculative: Literal["off", "prompt_lookup"] = "off"

    def __post_init__(self) -> None:
        _check(self.max_new_tokens > 0, "llm.max_new_tokens", f"should be positive, got {self.max_new_tokens}")
        _check(self.temperature >= 0, "llm.temperature", f"should be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "llm.top_p", f"should be in (0, 1], got {self.top_p}")
        _check(self.context_window > 0, "llm.context_window", f"should be positive, got {self.context_window}")
        _check(self.threads is None or self.threads > 0, "llm.threads", f"should be positive, got {self.threads}")
        _check(self.connect_timeout > 0, "llm.connect_timeout", f"should be positive, got {self.connect_timeout}")
        _check(self.read_timeout > 0, "llm.read_timeout", f"should be positive, got {self.read_timeout}")
        _check(self.max_retries >= 0, "llm.max_retries", f"should be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class IndexConfig:
    # Name of the index folder under $RAGTUNE_HOME/indexes.
    name: str = "default"
    # The vector index engine: hnswlib (a file in each index generation) or milvus (a collection per
    # generation in Milvus Lite or a Milvus server, at index.uri, holding the chunks' texts too: a node
    # without the index folder serves dense retrieval from index.uri and index.name alone).
    backend: IndexBackend = "hnswlib"
    # milvus only: a local file ending in .db (Milvus Lite, embedded: one process at a time) or a server
    # address such as http://host:19530 (any number of processes and machines).
    uri: str | None = None
    # milvus only: a file holding the server's token (user:password or an API key); null: no token.
    # The token itself never sits in a config, where it would be saved next to every index.
    token_file: str | None = None
    # Vector distance: cosine | ip | l2.
    space: Literal["cosine", "ip", "l2"] = "cosine"
    # Graph degree: higher raises recall and memory.
    m: int = 16
    # Build-time candidate list: higher raises recall and build time.
    ef_construction: int = 200
    # Query-time candidate list: higher raises recall and latency (never below top_k).
    ef_search: int = 64

    def __post_init__(self) -> None:
        _check(
            bool(self.name) and "/" not in self.name and not self.name.startswith("."),
            "index.name",
            f"should be a plain folder name, got {self.name!r}",
        )
        for key in ("m", "ef_construction", "ef_search"):
            value = getattr(self, key)
            _check(value > 0, f"index.{key}", f"should be positive, got {value}")
        if self.backend == "milvus":
            _check(
                bool(self.uri),
                "index.uri",
                "is required with index.backend=milvus: a local .db file or http://host:19530",
            )
            uri = self.uri or ""
            server = re.match(r"(https?|tcp|unix)://", uri) is not None
            _check(
                server or uri.endswith(".db"),
                "index.uri",
                f"should be a local path ending in .db or http://host:19530, got {uri!r}",
            )
            # The config is saved next to every index it builds: a password in the address would be too.
            _check(
                re.match(r"\w+://[^/]*@", uri) is None,
                "index.uri",
                "should not hold credentials; put the token in a file and set index.token_file",
            )
        _check(self.token_file is None or bool(self.token_file), "index.token_file", "should be a file path or null")


@dataclass(frozen=True)
class HybridConfig:
    # How the dense and the lexical rankings become one: rrf sums weight / (rrf_k + rank) over the two
    # sides; weighted sums weight * score, each side's scores min-max normalised to 0..1 over its candidates.
    # weighted at 0.5 found the passage most often on long documents (BENCHMARKS.md, retrieval section).
    method: Literal["rrf", "weighted"] = "weighted"
    # rrf: larger k flattens the difference between the first ranks of each side.
    rrf_k: int = 60
    # Weight of the dense side in either method; the lexical side gets 1 - dense_weight.
    dense_weight: float = 0.5

    def __post_init__(self) -> None:
        _check(self.rrf_k > 0, "rag.hybrid.rrf_k", f"should be positive, got {self.rrf_k}")
        _check(0 <= self.dense_weight <= 1, "rag.hybrid.dense_weight", f"should be in [0, 1], got {self.dense_weight}")


@dataclass(frozen=True)
class RerankConfig:
    # A local sentence-transformers cross-encoder folder that rescores the first stage's best candidates;
    # null: no reranking.
    model: str | None = None
    # Candidates the cross-encoder rescores (never below rag.top_k).
    candidates: int = 20
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _check(self.model is None or bool(self.model.strip()), "rag.rerank.model", "should be a folder or null")
        _check(self.candidates > 0, "rag.rerank.candidates", f"should be positive, got {self.candidates}")


@dataclass(frozen=True)
class RagConfig:
    # Chunk length in embedder tokens, and the tokens shared by neighbouring chunks. Short chunks keep
    # a small LM's context focused on the fact asked about.
    chunk_tokens: int = 96
    chunk_overlap: int = 24
    # Index and embed each chunk with its document's title and section heading path (pdf: its page);
    # the text shown as a source stays the chunk alone. Fixed per index: changing it needs --rebuild. Off by
    # default: on long documents it moved evidence hit@5 by less than its interval (BENCHMARKS.md).
    contextual: bool = False
    # How chunks are found: dense (embedding similarity in the vector index), lexical (BM25 over the
    # chunks' words, numbers and codes) or hybrid (both rankings fused, see rag.hybrid).
    retriever: RetrieverKind = "hybrid"
    # Chunks retrieved per question, and the lowest dense similarity a chunk may have to be used: whichever
    # retriever found and ranked it, a chunk is kept only if its index.space similarity to the question
    # (cosine: -1..1, higher is closer) is >= min_score, so one threshold means the same for all of them.
    top_k: int = 3
    min_score: float = 0.2
    # Candidates each side (dense, lexical) hands to hybrid fusion (never below rag.top_k).
    candidates: int = 20
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    # LM tokens spent on retrieved text at most; lower-ranked chunks are dropped beyond it.
    max_context_tokens: int = 1500
    # Field holding the text of each record in `.jsonl` documents.
    jsonl_text_field: str = "text"
    # Bounds on one document: larger files are skipped unread, and a document whose extracted text is
    # longer is skipped after reading (both reported by name). They keep one file from taking the memory.
    max_file_mb: float = 200.0
    max_text_mb: float = 20.0
    # Answer "not in the documents" (rag.prompt.NOT_FOUND, `refused: true`) when the retrieved text does not
    # support the model's answer: its numbers, names and most key words are not found there (rag/grounding.py).
    # The answer is then held back until complete (no token streaming), so nothing unsupported is shown.
    refuse_unsupported: bool = True

    def __post_init__(self) -> None:
        _check(self.chunk_tokens >= 16, "rag.chunk_tokens", f"should be at least 16, got {self.chunk_tokens}")
        _check(
            0 <= self.chunk_overlap < self.chunk_tokens,
            "rag.chunk_overlap",
            f"should be >= 0 and below rag.chunk_tokens ({self.chunk_tokens}), got {self.chunk_overlap}",
        )
        _check(self.top_k > 0, "rag.top_k", f"should be positive, got {self.top_k}")
        _check(-1 <= self.min_score <= 1, "rag.min_score", f"should be in [-1, 1], got {self.min_score}")
        _check(self.candidates > 0, "rag.candidates", f"should be positive, got {self.candidates}")
        _check(
            self.max_context_tokens > 0, "rag.max_context_tokens", f"should be positive, got {self.max_context_tokens}"
        )
        for key in ("max_file_mb", "max_text_mb"):
            value = getattr(self, key)
            _check(0 < value < float("inf"), f"rag.{key}", f"should be a positive number, got {value}")


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Module names to adapt; null picks the attention projections of the model's family.
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        _check(self.r > 0, "finetune.lora.r", f"should be positive, got {self.r}")
        _check(self.alpha > 0, "finetune.lora.alpha", f"should be positive, got {self.alpha}")
        _check(0 <= self.dropout < 1, "finetune.lora.dropout", f"should be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class FinetuneConfig:
    method: Literal["lora", "full", "qlora"] = "lora"
    # Adapter name under $RAGTUNE_HOME/adapters used by the finetune and hybrid modes.
    adapter: str | None = None
    # Stop after this many optimizer steps (null: run `epochs` epochs).
    max_steps: int | None = None
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    # Long enough for a RAG prompt with rag.top_k chunks (RAFT examples), not only short QA pairs.
    max_seq_len: int = 1024
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.05
    # Share of examples held out to report eval loss.
    eval_fraction: float = 0.1
    # Write a checkpoint every N optimizer steps.
    save_every: int = 50
    seed: int = 0
    # RAFT-style data for hybrid: share of examples whose prompt holds the chunk the answer came from,
    # and how many unrelated chunks (distractors) each prompt also holds: with the oracle, rag.top_k in all.
    raft_oracle_fraction: float = 0.8
    raft_distractors: int = 2
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        _check(
            self.max_steps is None or self.max_steps > 0,
            "finetune.max_steps",
            f"should be positive, got {self.max_steps}",
        )
        _check(self.epochs > 0, "finetune.epochs", f"should be positive, got {self.epochs}")
        _check(self.lr > 0, "finetune.lr", f"should be positive, got {self.lr}")
        for key in ("batch_size", "grad_accum", "max_seq_len", "save_every"):
            value = getattr(self, key)
            _check(value > 0, f"finetune.{key}", f"should be positive, got {value}")
        _check(0 <= self.eval_fraction < 1, "finetune.eval_fraction", f"should be in [0, 1), got {self.eval_fraction}")
        _check(0 <= self.warmup_ratio < 1, "finetune.warmup_ratio", f"should be in [0, 1), got {self.warmup_ratio}")
        _check(
            0 <= self.raft_oracle_fraction <= 1,
            "finetune.raft_oracle_fraction",
            f"should be in [0, 1], got {self.raft_oracle_fraction}",
        )
        _check(self.raft_distractors >= 0, "finetune.raft_distractors", f"should be >= 0, got {self.raft_distractors}")


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
        _check(0 < self.port < 65536, "serve.port", f"should be in 1..65535, got {self.port}")
        limits = ("max_queue", "max_request_bytes", "max_upload_bytes", "max_tokens_limit", "max_embedding_inputs")
        limits += ("max_embedding_chars", "max_files", "max_upload_total_bytes", "max_concurrent_uploads")
        for key in limits:
            value = getattr(self, key)
            _check(value > 0, f"serve.{key}", f"should be positive, got {value}")
        total, one = self.max_upload_total_bytes, self.max_upload_bytes
        _check(one <= total, "serve.max_upload_bytes", f"should be <= serve.max_upload_total_bytes={total}, got {one}")


@dataclass(frozen=True)
class JudgeConfig:
    # A local LM that judges whether each written rag/hybrid answer is supported by the passages it read
    # (the likelihood of "yes" against "no" after a fixed prompt, ragtune/compare/judge.py): a preset name, a
    # local Hugging Face folder or a .gguf file, run by llm.backend (auto where that is openai: the judge is
    # local). null: no judge.
    model: str | None = None

    def __post_init__(self) -> None:
        _check(self.model is None or bool(self.model.strip()), "eval.judge.model", "should be a model or null")


@dataclass(frozen=True)
class EvalConfig:
    # How `eval` and `compare` answer closed-set questions (`choices` in the question file). loglik: each
    # path scores every choice's log-probability as the start of its reply to its own prompt (retrieved text
    # for rag/hybrid, adapter for finetune/hybrid) and picks the likeliest, as reference harnesses do;
    # generate: the path writes a free-text answer and the choice is parsed from it.
    closed_set: Literal["loglik", "generate"] = "loglik"
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass(frozen=True)
class Config:
    # base: the LM alone; rag: retrieve then answer; finetune: adapted model, no retrieval; hybrid: both.
    mode: Mode = "rag"
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rag: RagConfig = field(default_factory=RagConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config, for manifests and `--json` output."""
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML (or the defaults when `path` is None), apply `key.sub=value` overrides, validate."""
    raw: dict[str, Any] = {}
    lines: dict[str, str] = {}
    if path is not None:
        raw, lines = _read_yaml(Path(path))
    lines.update(_set_overrides(raw, overrides))
    return _build(Config, raw, "", lines)


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`key.sub=value` overrides on top of an existing Config, validated as a whole as `--set` is."""
    if not overrides:
        return config
    raw = yaml.safe_load(to_yaml(config))  # the plain values a config file holds (lists, not tuples)
    return _build(Config, raw, "", _set_overrides(raw, overrides))


def _set_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Apply `overrides` to `raw` in place; where each key was set, for error messages."""
    lines: dict[str, str] = {}
    for override in overrides:
        key, value = _parse_override(override)
        _set_dotted(raw, key, value)
        lines[key] = f"--set {override}"
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing --config or drop the flag") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level should be a mapping of sections, got {type(data).__name__}")
    lines: dict[str, str] = {}
    _collect_lines(node, "", path, lines)
    return data, lines


def _collect_lines(node: Any, prefix: str, path: Path, lines: dict[str, str]) -> None:
    """Remember the file:line of every mapping key so errors can point at it."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = f"{path}:{key_node.start_mark.line + 1}"
            _collect_lines(value_node, key + ".", path, lines)


def _parse_override(override: str) -> tuple[str, Any]:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, for example --set rag.top_k=8")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _where(lines: dict[str, str], key: str) -> str:
    return f" ({lines[key]})" if key in lines else ""


def _build(cls: type, data: Any, prefix: str, lines: dict[str, str]) -> Any:
    section = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{section}{_where(lines, prefix.rstrip('.'))}: should be a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {key}{_where(lines, key)}{hint}")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, key + ".", lines)
        else:
            kwargs[name] = _coerce(value, kind, key, lines)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        raise ConfigError(f"{exc}{_where(lines, key)}") from None


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, kind: Any, key: str, lines: dict[str, str]) -> Any:
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _coerce(value, others[0], key, lines)
    if origin is Literal:
        if value is False and "off" in args:  # YAML 1.1 (PyYAML) reads a bare `off` as false
            value = "off"
        if value not in args:
            raise ConfigError(f"{key}{_where(lines, key)}: should be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}{_where(lines, key)}: should be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", lines) for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads 1e-3 and 2E5 as strings: it wants a dot in the mantissa, as in 1.0e-3.
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}{_where(lines, key)}: should be {kind.__name__}, got {value!r}")
    return value

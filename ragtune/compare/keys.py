"""What names each compare artefact: equal inputs give an equal key, and the artefact they name is reused.

An index, training file, adapter or eval is rebuilt only when something that changes it changes. A key
that gains or loses an input makes every earlier artefact of its kind look new (rebuilt once), so each
function lists exactly what the artefact depends on and leaves out what does not change it.
"""

from __future__ import annotations

from typing import Any

from models.config import Config, to_dict
from ragtune.compare.phases import digest


def chunking(config: Config) -> dict[str, Any]:
    """The settings that decide what is indexed: the same documents give the same chunks under them."""
    rag = config.rag
    # Contextual chunks embed a document's title and headings with each chunk: it decides the vectors.
    return {
        "chunk_tokens": rag.chunk_tokens,
        "chunk_overlap": rag.chunk_overlap,
        "jsonl": rag.jsonl_text_field,
        "contextual": rag.contextual,
    }


def index_key(config: Config, trees: list[str], embedder_fingerprint: str | None = None) -> str:
    """An index of the documents hashed in `trees`; its name and ef_search (a query setting) do not count.

    A trained embedder's fingerprint counts too: one trained again under the same name embeds differently.
    """
    index = {k: v for k, v in to_dict(config.index).items() if k not in ("name", "ef_search")}
    parts = ("index", trees, to_dict(config.embedder), chunking(config), index)
    return digest(*parts, embedder_fingerprint) if embedder_fingerprint else digest(*parts)


def embedder_key(config: Config, tree: str) -> str:
    """An embedder trained on one document folder: the base embedder, the chunks it sees, finetune.embedder.*."""
    c = config
    # Only lm queries are written by the LM; sentence and keyphrase queries come from the chunks alone.
    llm = to_dict(c.llm) if c.finetune.embedder.queries == "lm" else None
    return digest(
        "embedder", tree, to_dict(c.embedder), to_dict(c.finetune.embedder), chunking(c), c.finetune.seed, llm
    )


def synth_key(config: Config, tree: str) -> str:
    """Pairs synthesised from one document folder by the configured LM."""
    c = config
    return digest("synth", tree, to_dict(c.llm), to_dict(c.embedder), chunking(c), c.finetune.seed)


def raft_key(config: Config, pairs_sha256: str, tree: str) -> str:
    """RAFT examples: the pairs, the documents their chunks come from, and the raft_* settings."""
    raft = {k: v for k, v in to_dict(config.finetune).items() if k.startswith("raft_") or k == "seed"}
    return digest("raft", pairs_sha256, tree, to_dict(config.embedder), chunking(config), raft)


def adapter_inputs(config: Config, base_fingerprint: str, data_sha256: str) -> dict[str, Any]:
    """What an adapter is trained from; `adapter_matches` finds one with these inputs, wherever it came from."""
    finetune = {k: v for k, v in to_dict(config.finetune).items() if k != "adapter"}
    return {
        "base_fingerprint": base_fingerprint,
        "data_sha256": data_sha256,
        "finetune": finetune,
        "dtype": config.llm.dtype,
    }


def adapter_key(inputs: dict[str, Any]) -> str:
    return digest("adapter", inputs)


def adapter_matches(manifest: dict[str, Any], inputs: dict[str, Any]) -> bool:
    """Whether an adapter's manifest records these inputs (also for one trained by hand with `ragtune train`)."""
    finetune = {k: v for k, v in manifest.get("finetune", {}).items() if k != "adapter"}
    return (
        manifest.get("base_fingerprint") == inputs["base_fingerprint"]
        and manifest.get("data", {}).get("sha256") == inputs["data_sha256"]
        and finetune == inputs["finetune"]
        and manifest.get("config", {}).get("llm", {}).get("dtype") == inputs["dtype"]
    )


def eval_key(
    path: str, questions_sha256: str, limit: int | None, seed: int, sets: tuple[str, ...], config: Config
) -> str:
    """One path's answers: the question sample, the index/adapter it read (`sets`) and the whole config."""
    return digest("eval", path, questions_sha256, limit, seed, sets, to_dict(config))


def retrieval_key(questions_sha256: str, limit: int | None, seed: int, index: str, config: Config) -> str:
    """Retrieval-only scores: the question sample, the index searched and the whole config (settings vary on it)."""
    return digest("retrieval", questions_sha256, limit, seed, index, to_dict(config))

"""The retrieval settings that `eval --retrieval-only`, `compare --retriever auto` and the benchmark score.

One table: each setting is a label and the `--set` overrides that select it, built from the retrievers
registered in rag.retrieve.RETRIEVERS. The config key names of the retriever variants live only here,
so a renamed key is one edit; a setting that cannot run is reported as skipped with the config's own
error, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from models.config import Config

# Retriever name -> its variants as (label, overrides besides rag.retriever=NAME). A registered retriever
# not listed here is scored once, as `rag.retriever=NAME` with the rest of the config unchanged.
VARIANTS: dict[str, list[tuple[str, list[str]]]] = {
    "hybrid": [
        ("hybrid rrf", ["rag.hybrid.method=rrf", "rag.hybrid.dense_weight=0.5"]),
        ("hybrid weighted 0.3", ["rag.hybrid.method=weighted", "rag.hybrid.dense_weight=0.3"]),
        ("hybrid weighted 0.5", ["rag.hybrid.method=weighted", "rag.hybrid.dense_weight=0.5"]),
        ("hybrid weighted 0.7", ["rag.hybrid.method=weighted", "rag.hybrid.dense_weight=0.7"]),
    ],
}
# The cross-encoder that rescores the first stage's candidates: each first-stage setting is scored with
# the configured model and without one.
RERANK_KEY = "rag.rerank.model"
# Chunks embedded with their document's title and headings: fixed per index, so only the benchmark,
# which builds one index each way, varies it.
CONTEXTUAL_KEY = "rag.contextual"


@dataclass(frozen=True)
class Setting:
    label: str
    overrides: tuple[str, ...]
    # Why it cannot run here, when that is known before trying (e.g. no reranker configured).
    skip: str | None = None


def first_stage(retrievers: Iterable[str]) -> list[Setting]:
    """Every registered retriever, with the variants VARIANTS lists for it."""
    settings = []
    for name in retrievers:
        for label, extra in VARIANTS.get(name, [(name, [])]):
            settings.append(Setting(label, (f"rag.retriever={name}", *extra)))
    return settings


def retrieval_settings(retrievers: Iterable[str], config: Config, rerank: bool = True) -> list[Setting]:
    """The settings to score on `config`: the first stages, each without and with the configured reranker.

    Without a reranker configured (or with `rerank=False`) the first stages run as configured and one
    skipped "rerank" entry says why reranking was not scored.
    """
    stages = first_stage(retrievers)
    if not config.rag.rerank.model:
        why = f"{RERANK_KEY} is not set; --set {RERANK_KEY}=FOLDER (a local cross-encoder) scores reranking"
        return [*stages, Setting("rerank", (), skip=why)]
    off = [Setting(s.label, (*s.overrides, f"{RERANK_KEY}=null")) for s in stages]
    if not rerank:
        return [*off, Setting("rerank", (), skip="reranking left out of this run (rerank=False)")]
    return [*off, *(Setting(f"{s.label} + rerank", s.overrides) for s in stages)]

"""The retrieval settings that `eval --retrieval-only`, `compare --retriever auto` and the benchmark score.

One table: each setting is a label and the `--set` overrides that select it, built from the retrievers
registered in rag.retrieve.RETRIEVERS. The config key names of the retriever variants live only here,
so a renamed key is one edit; a setting whose key this version's config lacks is reported as skipped
with the config's own error, never dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


def config_value(config: Any, dotted: str) -> tuple[bool, Any]:
    """(whether the config has the dotted key, its value): lets the table adapt to the keys that exist."""
    node = config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False, None
        node = getattr(node, part)
    return True, node


def first_stage(retrievers: Iterable[str]) -> list[Setting]:
    """Every registered retriever, with the variants VARIANTS lists for it."""
    settings = []
    for name in retrievers:
        for label, extra in VARIANTS.get(name, [(name, [])]):
            settings.append(Setting(label, (f"rag.retriever={name}", *extra)))
    return settings


def retrieval_settings(retrievers: Iterable[str], config: Any, rerank: bool = True) -> list[Setting]:
    """The settings to score on `config`: the first stages, each without and with the configured reranker.

    Without a reranker configured (or with `rerank=False`) the first stages run as configured and one
    skipped "rerank" entry says why reranking was not scored.
    """
    stages = first_stage(retrievers)
    exists, model = config_value(config, RERANK_KEY)
    if not exists:
        return [*stages, Setting("rerank", (), skip=f"this version has no {RERANK_KEY} key: no reranker to score")]
    if not model:
        why = f"{RERANK_KEY} is not set; --set {RERANK_KEY}=FOLDER (a local cross-encoder) scores reranking"
        return [*stages, Setting("rerank", (), skip=why)]
    off = [Setting(s.label, (*s.overrides, f"{RERANK_KEY}=null")) for s in stages]
    if not rerank:
        return [*off, Setting("rerank", (), skip="reranking left out of this run (rerank=False)")]
    return [*off, *(Setting(f"{s.label} + rerank", s.overrides) for s in stages)]

"""The four ways to answer, in one table: which read the index and which need an adapter.

The CLI, `serve`, `compare` and `eval` ask this table instead of comparing mode strings, so a mode's
needs are stated once.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import ConfigError


@dataclass(frozen=True)
class AnswerMode:
    name: str
    retrieves: bool  # retrieved chunks go into the prompt: the index must exist
    adapted: bool  # finetune.adapter (a trained adapter) is applied to the LM
    summary: str


MODES: dict[str, AnswerMode] = {
    m.name: m
    for m in (
        AnswerMode("base", retrieves=False, adapted=False, summary="the LM alone, closed book"),
        AnswerMode("rag", retrieves=True, adapted=False, summary="retrieve chunks, answer from them, cite them"),
        AnswerMode("finetune", retrieves=False, adapted=True, summary="the adapted LM alone, closed book"),
        AnswerMode("hybrid", retrieves=True, adapted=True, summary="retrieval over the adapted LM"),
    )
}
RETRIEVING = tuple(name for name, m in MODES.items() if m.retrieves)
ADAPTED = tuple(name for name, m in MODES.items() if m.adapted)


def answer_mode(name: str) -> AnswerMode:
    """The table row for `name`; an unknown name is a ConfigError listing the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(f"mode: should be one of {', '.join(MODES)}, got {name!r}") from None

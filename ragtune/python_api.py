"""The Python API: `ragtune.open(...)` gives a `Ragtune` that ingests, answers and compares, as the CLI does.

    import ragtune

    rt = ragtune.open(overrides=["rag.top_k=5"])   # the config: a YAML path, a Config, or the defaults
    rt.ingest(["examples/docs"])
    answer = rt.ask("How much does a non-resident library card cost?")
    print(answer.text, [s.path for s in answer.sources])
    for piece in rt.stream("How long can I borrow a DVD?"):  # the text as it is shown
        print(piece, end="")

The CLI commands `ingest`, `ask` and `compare` are thin wrappers over these methods, so both raise the
same typed errors (models.errors.RagtuneError and its subclasses), each naming the bad value and the fix.
Models load on first use and stay loaded: a second `ask` answers without loading anything again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from models.answer import Answer, Answerer, EventStream, Message, collect, text_of
from models.config import Config, apply_overrides, load_config
from models.embedding import Embedder
from rag.ingest import IngestSummary


class Ragtune:
    """One config's ingest, ask and compare; the embedder and the answering pipeline are built once, lazily."""

    def __init__(self, config: Config, progress: bool | None = False) -> None:
        self.config = config
        # Progress bars and "preparing the model" notes: True shows them, False hides them, None shows them
        # only on a terminal.
        self.progress = progress
        self._embedder: Embedder | None = None
        self._answerer: Answerer | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from models.embedders import build_embedder

            self._embedder = build_embedder(self.config.embedder)
        return self._embedder

    def ingest(self, paths: Sequence[str | os.PathLike], rebuild: bool = False) -> IngestSummary:
        """Index the documents under `paths` (files or folders); unchanged files are skipped."""
        from rag.ingest import ingest

        return ingest([Path(p) for p in paths], self.config, self.embedder, rebuild=rebuild, progress=self.progress)

    def events(self, question: str, conversation: Sequence[Message] = ()) -> EventStream:
        """The answer as typed events (models.answer: Sources, Token, Verdict, Timings, Done) as it is made;
        `conversation` holds the earlier turns. Closing the stream early stops generation."""
        return self._answering().events(question, conversation)

    def stream(self, question: str, conversation: Sequence[Message] = ()) -> Iterator[str]:
        """The answer's text piece by piece as it is shown (a held-back answer comes whole, once checked)."""
        return text_of(self.events(question, conversation))

    def ask(self, question: str, conversation: Sequence[Message] = ()) -> Answer:
        """Answer one question: text, numbered sources (path, chunk, score), cited numbers, timings."""
        return collect(question, self.events(question, conversation))

    def compare(
        self, docs: str | os.PathLike, questions: str | os.PathLike, out: str | os.PathLike, **options: Any
    ) -> dict[str, Any]:
        """Run `ragtune compare` into `out` and return its results.json; `options` are CompareSpec's fields
        (paths, train_data, synth, update_docs, update_questions, update_train_data, limit, seed, retriever)."""
        import json

        from ragtune.compare.runner import run_compare
        from ragtune.compare.spec import CompareSpec

        spec = CompareSpec(docs=Path(docs), questions=Path(questions), out=Path(out), **options)
        run_compare(spec, self.config)
        return json.loads((spec.out / "results.json").read_text(encoding="utf-8"))

    def _answering(self) -> Answerer:
        if self._answerer is None:
            from models.modes import answer_mode
            from ragtune.compose import build_answerer

            embedder = self.embedder if answer_mode(self.config.mode).retrieves else None
            # Model loading takes a plain bool: None is decided here, as ingest's bars decide it.
            progress = sys.stderr.isatty() if self.progress is None else self.progress
            self._answerer = build_answerer(self.config, embedder=embedder, progress=progress)
        return self._answerer


def open(  # noqa: A001 - `ragtune.open(...)` reads as opening a ragtune setup, like `sqlite3.connect`
    config: str | os.PathLike | Config | None = None, overrides: Sequence[str] = (), progress: bool | None = False
) -> Ragtune:
    """A Ragtune for `config`: a YAML file, a Config, or None for $RAGTUNE_CONFIG else the built-in defaults.

    `overrides` are `key.sub=value` strings, exactly as `--set` takes them. A bad file, key or value raises
    ConfigError naming it. `progress`: see Ragtune.
    """
    if isinstance(config, Config):
        return Ragtune(apply_overrides(config, list(overrides)), progress)
    path = config if config is not None else os.environ.get("RAGTUNE_CONFIG")
    return Ragtune(load_config(str(path) if path is not None else None, list(overrides)), progress)

"""What a compare run is asked to do, checked before any slow step starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.data import read_records
from models.errors import InputError
from models.modes import ADAPTED, MODES, RETRIEVING, AnswerMode, answer_mode
from ragtune.compare.questions import read_questions, sample

# rag answering from an index built with an embedder trained on --docs (`ragtune train --target embedder`).
TUNED_EMBEDDER = "rag-tuned-embedder"
# compare's paths that are not answer modes of their own: each answers as the mode it names, built differently.
BUILT_PATHS = {TUNED_EMBEDDER: "rag"}
PATHS = (*MODES, *BUILT_PATHS)


def path_mode(path: str) -> AnswerMode:
    """The answer mode a compare path answers with (rag for rag-tuned-embedder); ConfigError for an unknown one."""
    return answer_mode(BUILT_PATHS.get(path, path))


def retrieving(paths: tuple[str, ...]) -> bool:
    """Whether any of `paths` reads an index."""
    return any(path_mode(p).retrieves for p in paths)


def uses_documents(path: str) -> bool:
    """Whether new documents change what `path` answers: through its index, its adapter, or both."""
    mode = path_mode(path)
    return mode.retrieves or mode.adapted


@dataclass(frozen=True)
class CompareSpec:
    docs: Path
    questions: Path
    out: Path
    # compare's paths are the answer modes, every one by default.
    paths: tuple[str, ...] = tuple(MODES)
    train_data: Path | None = None
    synth: bool = False
    update_docs: Path | None = None
    update_questions: Path | None = None
    update_train_data: Path | None = None
    limit: int | None = None
    seed: int = 0
    # configured: rag and hybrid retrieve as the config says; auto: the best retrieval setting on evidence
    # hit@5, scored first without the LM (`eval --retrieval-only`).
    retriever: str = "configured"
    command: str = ""

    def check(self) -> None:
        """Every input exists and the options fit together, before anything slow starts."""
        unknown = [p for p in self.paths if p not in PATHS]
        if unknown or not self.paths:
            raise InputError(f"--paths: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(PATHS)}")
        if not self.docs.is_dir():
            raise InputError(f"--docs {self.docs}: not a folder of documents")
        if self.retriever not in ("configured", "auto"):
            raise InputError(f"--retriever: should be configured or auto, got {self.retriever!r}")
        if self.retriever == "auto" and not retrieving(self.paths):
            raise InputError(
                f"--retriever auto picks how {' and '.join(RETRIEVING)} retrieve (and {TUNED_EMBEDDER}), and --paths "
                f"{','.join(self.paths)} has none of them; add one or drop --retriever"
            )
        for flag, path in (
            ("--questions", self.questions),
            ("--train-data", self.train_data),
            ("--update-questions", self.update_questions),
            ("--update-train-data", self.update_train_data),
        ):
            if path is not None and not path.is_file():
                raise InputError(f"{flag} {path}: no such file")
        if self.update_docs is not None and not self.update_docs.is_dir():
            raise InputError(f"--update-docs {self.update_docs}: not a folder of documents")
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"-o {self.out}: a file is there; give a folder for the report (new or from a run)")
        # A bad line or --limit is reported now, by the same checks eval uses, not after an hour of training.
        sample(read_questions(self.questions), self.limit, self.seed)
        if self.update_questions is not None:
            read_questions(self.update_questions)
        for path in (self.train_data, self.update_train_data):
            if path is not None:
                read_records(path)
        if (self.update_docs is None) != (self.update_questions is None):
            raise InputError("--update-docs and --update-questions go together: new documents and questions on them")
        adapted = [p for p in self.paths if p in ADAPTED]
        if adapted and self.train_data is None and not self.synth:
            raise InputError(
                f"--paths {','.join(adapted)} needs training data: --train-data FILE (prompt/completion, chat, "
                "Alpaca or raw text) or --synth (question/answer pairs generated from --docs)"
            )
        if "finetune" in self.paths and self.update_docs and self.update_train_data is None and not self.synth:
            raise InputError(
                "updating the finetune path needs training data for the new documents: --update-train-data FILE "
                "or --synth"
            )

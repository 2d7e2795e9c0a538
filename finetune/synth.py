"""Synthetic question/answer pairs from document chunks, written by the local LM, for knowledge-injection tuning.

Grounding rule (`is_grounded`): text is lowercased and split into words and numbers (punctuation dropped,
"1,000" read as 1000); stopwords are dropped. An answer is grounded when at least `min_overlap` of its
remaining content tokens occur in the chunk AND every number in it occurs in the chunk. An answer with no
content token at all ("yes", "it is") is never grounded. No stemming: answers are asked to be copied.
Pairs are also rejected when the question or answer is empty or over `MAX_WORDS`, or the question repeats
one already kept anywhere in the output file (same words, case and punctuation ignored).

Output is JSONL, one `{"prompt", "completion", "source", "chunk", "kind"}` record per kept pair. After
each chunk its records are appended and fsync'd, then its id is appended to `<out>.progress`; a rerun
skips the ids listed there, so a crash loses at most the chunk in progress. The progress file is kept
when the run ends: it records the settings and documents completion, and makes a rerun a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.errors import ConfigError, InputError
from models.generate import Generator, SamplingParams
from models.storage import atomic_write_text, fsync_dir

MAX_WORDS = 40  # longer questions/answers are chatter or copied paragraphs, not facts to memorise
_HEADER = "# ragtune-synth "  # first line of the progress file; the JSON after it is the run's settings
# Small fixed English list: enough to stop "it is the" counting as overlap; no dependency on nltk.
_STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from as into onto about over under than "
    "is are was were be been being am do does did doing have has had having will would shall should can "
    "could may might must it its it's this that these those there here i me my we our you your he him his "
    "she her they them their what which who whom whose when where why how not no yes nor all any some "
    "each every also just only very too more most such own same other up down out off again once".split()
)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_FIELD = re.compile(r"^\s*(?:[-*•]\s+|\d+\s*[.)]\s*)?[*_]*(q|a|question|answer)\s*\d*\s*[*_]*\s*:[*_]*\s*(.*)$", re.I)
_BULLET = re.compile(
    r"^\s*(?:[-*•]\s+|\d+\s*[.):]\s*)?(?:[*_]*(?:q|question|rewrite)\s*\d*\s*[*_]*\s*:[*_]*\s*)?", re.I
)

PAIRS_PROMPT = """Write {n} question-and-answer pairs that test the facts in the text below.
Rules:
- Each question must make sense on its own, without the text: name the subject, never say "the text".
- Each answer is short (a few words) and copied from the text.
- Use exactly this format and nothing else:
Q: <question>
A: <answer>

Document: {source}
Text:
{text}"""

PARAPHRASE_PROMPT = """Rewrite the question below in {n} different ways. Each rewrite must ask for the same fact, \
so that "{answer}" still answers it, and must not contain the answer.
Write one rewrite per line and nothing else.

Question: {question}"""


@dataclass(frozen=True)
class SourceChunk:
    id: str  # stable id, e.g. "path#ordinal": the resume key and the seed key
    source: str  # document path, copied into every record
    text: str


@dataclass
class SynthSummary:
    """Counts for this run only; chunks finished by an earlier run are in `done_before`, not in the counts."""

    chunks: int = 0  # chunks given
    done_before: int = 0  # skipped: listed in the progress file
    generated: int = 0  # candidate pairs parsed (originals + paraphrases)
    kept: int = 0  # records written
    rejected: int = 0  # generated - kept
    seconds: float = 0.0
    originals: int = 0  # kept records of kind "original"
    paraphrases: int = 0  # kept records of kind "paraphrase"
    rejected_by: dict[str, int] = field(default_factory=dict)  # reason -> count; see _reject_reason
    unparsed: int = 0  # LM answers for a chunk with no Q/A pair in them (a model not following the format)
    lm_calls: int = 0
    completion_tokens: int = 0


def _tokens(text: str) -> list[str]:
    return [t.replace(",", "") for t in _TOKEN.findall(text.lower())]


def _key(text: str) -> str:
    """Normal form for duplicate checks: words and numbers only, stopwords kept ("who" vs "when" matters)."""
    return " ".join(_tokens(text))


def is_grounded(answer: str, chunk: str, min_overlap: float = 0.6) -> bool:
    """True when enough of the answer's content tokens, and all of its numbers, occur in the chunk."""
    content = [t for t in _tokens(answer) if t not in _STOPWORDS]
    if not content:
        return False
    present = set(_tokens(chunk))
    if any(t[0].isdigit() and t not in present for t in content):
        return False
    return sum(t in present for t in content) / len(content) >= min_overlap


def _clean(text: str) -> str:
    text = text.strip().strip("*_").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Read `Q: ...` / `A: ...` lines (numbered, bulleted, bold or "Question:" too) into (question, answer).

    Other lines are ignored (preambles, chatter). A question without an answer is dropped, and so is an
    answer without an open question; the first answer to a question wins.
    """
    pairs: list[tuple[str, str]] = []
    question = ""
    for line in text.splitlines():
        match = _FIELD.match(line)
        if not match:
            continue
        body = _clean(match.group(2))
        if match.group(1)[0].lower() == "q":
            question = body
        elif question and body:
            pairs.append((question, body))
            question = ""  # a second "A:" has no question left to pair with
    return pairs


def parse_paraphrases(text: str) -> list[str]:
    """The lines that are questions (end in "?"), numbering, bullets and `Q:` labels removed.

    Requiring the "?" drops preambles such as "Here are three rewrites:" that would otherwise pass as one.
    """
    lines = (_clean(_BULLET.sub("", line, count=1)) for line in text.splitlines())
    return [line for line in lines if line.endswith("?")]


def _reject_reason(question: str, answer: str, chunk: str, seen: set[str], min_overlap: float, original: str) -> str:
    """Why a candidate pair is dropped, or "" to keep it; `original` is the question a paraphrase rewrites."""
    if not _tokens(question) or not _tokens(answer):
        return "empty"
    if len(question.split()) > MAX_WORDS or len(answer.split()) > MAX_WORDS:
        return "too_long"
    if not is_grounded(answer, chunk, min_overlap):
        return "ungrounded"
    if original and _key(question) == _key(original):
        return "unchanged"
    if original and is_grounded(answer, question, min_overlap):  # the rewrite gives the answer away
        return "leaks_answer"
    return "duplicate" if _key(question) in seen else ""


@dataclass(frozen=True)
class _Settings:
    """What makes a run reproducible; stored in the progress file so a resume cannot mix settings."""

    generator: str
    pairs_per_chunk: int
    paraphrases: int
    seed: int
    max_new_tokens: int
    temperature: float
    min_overlap: float

    def __post_init__(self) -> None:
        for name, low in (("pairs_per_chunk", 1), ("paraphrases", 0), ("max_new_tokens", 1), ("temperature", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} should be at least {low}, got {getattr(self, name)}")
        if not 0 < self.min_overlap <= 1:
            raise ConfigError(f"min_overlap should be in (0, 1], got {self.min_overlap}")

    def sampling(self, chunk_id: str, purpose: str) -> SamplingParams:
        # Seed keyed by chunk id, not position: adding documents later leaves the other chunks' samples alone.
        digest = hashlib.sha256(f"{self.seed}\0{chunk_id}\0{purpose}".encode()).digest()
        seed = int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
        return SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=seed)


@dataclass
class _Run:
    generator: Generator
    settings: _Settings
    summary: SynthSummary
    seen: set[str]  # normalised questions kept so far, in this run and the ones it resumes

    def ask(self, prompt: str, params: SamplingParams) -> str:
        stream = self.generator.stream([{"role": "user", "content": prompt}], params)
        text = "".join(stream)
        self.summary.lm_calls += 1
        self.summary.completion_tokens += stream.usage.completion_tokens
        return text

    def chunk_records(self, chunk: SourceChunk) -> list[dict[str, str]]:
        """Ask for pairs, filter them, add paraphrases of the kept ones; returns the records to write."""
        n = self.settings.pairs_per_chunk
        prompt = PAIRS_PROMPT.format(n=n, source=Path(chunk.source).name, text=chunk.text)
        pairs = parse_pairs(self.ask(prompt, self.settings.sampling(chunk.id, "pairs")))
        self.summary.unparsed += not pairs
        records: list[dict[str, str]] = []
        for number, (question, answer) in enumerate(pairs[:n]):  # extra pairs were not asked for
            if self.keep(question, answer, chunk, ""):
                records.append(_record(question, answer, chunk, "original"))
                if self.settings.paraphrases:
                    records += self.rephrase(question, answer, chunk, number)
        return records

    def rephrase(self, question: str, answer: str, chunk: SourceChunk, number: int) -> list[dict[str, str]]:
        # One request for all N rewrites: the model sees its earlier ones and varies them; greedy stays useful.
        n = self.settings.paraphrases
        prompt = PARAPHRASE_PROMPT.format(n=n, answer=answer, question=question)
        text = self.ask(prompt, self.settings.sampling(chunk.id, f"paraphrase-{number}"))
        candidates = parse_paraphrases(text)[:n]
        return [_record(c, answer, chunk, "paraphrase") for c in candidates if self.keep(c, answer, chunk, question)]

    def keep(self, question: str, answer: str, chunk: SourceChunk, original: str) -> bool:
        self.summary.generated += 1
        reason = _reject_reason(question, answer, chunk.text, self.seen, self.settings.min_overlap, original)
        if reason:
            self.summary.rejected_by[reason] = self.summary.rejected_by.get(reason, 0) + 1
            return False
        self.seen.add(_key(question))
        return True


def _record(question: str, answer: str, chunk: SourceChunk, kind: str) -> dict[str, str]:
    return {"prompt": question, "completion": answer, "source": chunk.source, "chunk": chunk.id, "kind": kind}


def _append(path: Path, text: str) -> None:
    # Append + fsync: once this returns the bytes survive a crash or power cut.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
        os.fsync(handle.fileno())


def _complete_lines(path: Path) -> list[bytes]:
    """The file's lines that end in a newline; a partial last line (crash mid-write) is cut off the file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        _truncate(path, end)
    return data[:end].splitlines(keepends=True)


def _open_progress(out_path: Path, progress_path: Path, settings: dict[str, Any]) -> set[str]:
    """Start a new output or check an old one; returns the chunk ids already done."""
    if not progress_path.exists():
        if out_path.exists():
            raise InputError(
                f"{out_path} already exists and has no {progress_path.name} to resume from; "
                "pass a new output path or delete the file"
            )
        # The progress file first: a crash before the output exists then resumes instead of refusing.
        atomic_write_text(progress_path, _HEADER + json.dumps(settings, sort_keys=True) + "\n")
    lines = [line.decode("utf-8").rstrip("\n") for line in _complete_lines(progress_path)]
    if not lines or not lines[0].startswith(_HEADER):
        raise InputError(f"{progress_path} is not a synth progress file; delete it and {out_path} to start over")
    before = json.loads(lines[0][len(_HEADER) :])
    for key, value in settings.items():
        if before.get(key) != value:
            raise InputError(
                f"{out_path} was started with {key}={before.get(key)!r}, this run has {key}={value!r}; "
                "pass the same value to resume or a new output path"
            )
    done = set(lines[1:])
    if done and not out_path.exists():
        raise InputError(f"{out_path} is missing but {progress_path} lists finished chunks; delete it to restart")
    out_path.touch()
    fsync_dir(out_path.parent)
    return done


def _trim_output(out_path: Path, done: set[str]) -> set[str]:
    """Cut records of a chunk not marked done (crash between writing them and the marker); returns kept questions."""
    seen: set[str] = set()
    offset, cut = 0, None
    for raw in _complete_lines(out_path):
        try:
            record = json.loads(raw)
            good = isinstance(record, dict) and record.get("chunk") in done
        except ValueError:
            good = False
        if good and cut is not None:
            raise InputError(f"{out_path} has records after a damaged or unfinished one; delete it and its .progress")
        if good:
            seen.add(_key(record["prompt"]))
        elif cut is None:
            cut = offset
        offset += len(raw)
    if cut is not None:
        _truncate(out_path, cut)
    return seen


def _check_ids(chunks: list[SourceChunk]) -> None:
    # Ids are lines of the progress file: a duplicate or a line break would make resume skip the wrong chunk.
    for chunk_id, count in Counter(chunk.id for chunk in chunks).items():
        if count > 1 or not chunk_id or chunk_id.startswith("#") or any(c in chunk_id for c in "\r\n"):
            why = f"appears {count} times" if count > 1 else "is empty, starts with '#' or holds a line break"
            raise InputError(f"chunk id {chunk_id!r} {why}; ids must be unique one-line names like 'path#3'")


def synthesize(
    chunks: list[SourceChunk],
    generator: Generator,
    out_path: Path,
    *,
    pairs_per_chunk: int = 3,
    paraphrases: int = 0,
    seed: int = 0,
    max_new_tokens: int = 256,
    progress: bool | None = None,
    temperature: float = 0.0,
    min_overlap: float = 0.6,
) -> SynthSummary:
    """Write grounded Q/A pairs for `chunks` to `out_path` (JSONL), resuming from `<out_path>.progress`.

    Greedy by default (`temperature=0`); with sampling, each request's seed derives from (`seed`, chunk id).
    Deterministic for a fixed seed, model and chunk list, whether or not the run was interrupted.
    """
    started = time.perf_counter()
    name = getattr(generator, "name", type(generator).__name__)
    settings = _Settings(name, pairs_per_chunk, paraphrases, seed, max_new_tokens, temperature, min_overlap)
    _check_ids(chunks)
    out_path = Path(out_path)
    progress_path = out_path.with_suffix(out_path.suffix + ".progress")
    done = _open_progress(out_path, progress_path, dataclasses.asdict(settings))
    summary = SynthSummary(chunks=len(chunks))
    run = _Run(generator, settings, summary, seen=_trim_output(out_path, done))
    todo = [chunk for chunk in chunks if chunk.id not in done]
    summary.done_before = len(chunks) - len(todo)
    # tqdm: None hides the bar when stderr is not a terminal (logs, CI), False always shows it.
    quiet = None if progress is None else not progress
    with tqdm(total=len(chunks), initial=summary.done_before, desc="synthesizing", unit="chunk", disable=quiet) as bar:
        for chunk in todo:
            records = run.chunk_records(chunk)
            if records:
                _append(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            _append(progress_path, chunk.id + "\n")  # only after the records are on disk
            summary.kept += len(records)
            summary.originals += sum(r["kind"] == "original" for r in records)
            bar.set_postfix(kept=summary.kept, refresh=False)
            bar.update()
    summary.paraphrases = summary.kept - summary.originals
    summary.rejected = summary.generated - summary.kept
    summary.rejected_by = dict(sorted(summary.rejected_by.items()))
    summary.seconds = time.perf_counter() - started
    return summary

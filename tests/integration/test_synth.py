"""QA synthesis end to end: the tiny random LM for the mechanics (resume, determinism, refusal), and a
scripted generator with known output to prove the parser and grounding filter keep real pairs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from finetune.synth import SourceChunk, SynthSummary, synthesize
from models.config import LLMConfig
from models.errors import ConfigError, InputError
from models.generate import Generator, SamplingParams, Usage, load_language_model

KEYS = {"prompt", "completion", "source", "chunk", "kind"}
CHUNKS = [
    SourceChunk("docs/library.md#0", "docs/library.md", "The library opens at nine and closes at eight."),
    SourceChunk("docs/library.md#1", "docs/library.md", "A non-resident card costs forty-five dollars per year."),
    SourceChunk("docs/faq.md#0", "docs/faq.md", "Questions, answers, documents and sources are cited with numbers."),
    SourceChunk("docs/faq.md#1", "docs/faq.md", "Room 12 can be booked for 3 hours by any card holder."),
]
# Sampling (not greedy) so that determinism is a real claim; few tokens because the tiny LM is slow on CPU.
FAST = {"pairs_per_chunk": 2, "paraphrases": 1, "max_new_tokens": 8, "temperature": 0.8, "progress": False}


@pytest.fixture(scope="module")
def tiny(tiny_lm_path: Path) -> Generator:
    return load_language_model(LLMConfig(model=str(tiny_lm_path), dtype="float32", context_window=2048)).generator()


class Recorder:
    """Passes every request through to the real generator and keeps (prompt, seed, reply), because the
    random tiny LM's replies are all rejected and an empty output file would make determinism trivial."""

    def __init__(self, inner: Generator) -> None:
        self.inner, self.name, self.log = inner, inner.name, []

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> ScriptedStream:
        stream = self.inner.stream(messages, params)
        text = "".join(stream)
        self.log.append((messages[-1]["content"], params.seed, text))
        return ScriptedStream(text, stream.usage)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def baseline(tiny: Generator, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary, list]:
    """One uninterrupted run over all chunks; the other tests compare against it (read-only)."""
    out = tmp_path_factory.mktemp("synth") / "qa.jsonl"
    recorder = Recorder(tiny)
    return out, synthesize(CHUNKS, recorder, out, **FAST), recorder.log


def progress_of(out: Path) -> Path:
    return out.with_suffix(out.suffix + ".progress")


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_tiny_lm_run_completes_with_valid_records(baseline: tuple[Path, SynthSummary, list]) -> None:
    out, summary, log = baseline
    assert (summary.chunks, summary.done_before) == (4, 0)
    assert summary.kept + summary.rejected == summary.generated
    assert sum(summary.rejected_by.values()) == summary.rejected
    rows = records(out)
    assert len(rows) == summary.kept
    # One request per chunk, plus one paraphrase request per kept original question.
    assert summary.lm_calls == len(log) == 4 + sum(row["kind"] == "original" for row in rows)
    assert 0 < summary.completion_tokens <= FAST["max_new_tokens"] * summary.lm_calls
    assert all(set(row) == KEYS and row["kind"] in ("original", "paraphrase") for row in rows)
    marks = progress_of(out).read_text().splitlines()
    assert marks[0].startswith("# ragtune-synth ") and marks[1:] == [c.id for c in CHUNKS]


def test_rerun_skips_everything(tiny: Generator, baseline: tuple[Path, SynthSummary, list], tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    shutil.copy(baseline[0], out)
    shutil.copy(progress_of(baseline[0]), progress_of(out))
    again = synthesize(CHUNKS, tiny, out, **FAST)
    assert (again.done_before, again.generated, again.lm_calls) == (4, 0, 0)
    assert out.read_bytes() == baseline[0].read_bytes()


def test_fresh_and_resumed_runs_match_the_baseline(
    tiny: Generator, baseline: tuple[Path, SynthSummary, list], tmp_path: Path
) -> None:
    fresh, resumed = tmp_path / "fresh.jsonl", tmp_path / "resumed.jsonl"
    again = Recorder(tiny)
    synthesize(CHUNKS, again, fresh, **FAST)
    assert again.log == baseline[2] and len({text for _, _, text in again.log}) > 1  # same sampled replies
    assert fresh.read_bytes() == baseline[0].read_bytes()
    assert progress_of(fresh).read_bytes() == progress_of(baseline[0]).read_bytes()
    interrupted = Recorder(tiny)
    synthesize(CHUNKS[:2], interrupted, resumed, **FAST)  # "interrupted" after two chunks
    rest = synthesize(CHUNKS, interrupted, resumed, **FAST)
    assert rest.done_before == 2
    assert interrupted.log == baseline[2]  # the first two chunks were not asked again, the rest alike
    assert resumed.read_bytes() == baseline[0].read_bytes()
    assert progress_of(resumed).read_bytes() == progress_of(baseline[0]).read_bytes()


def test_refuses_to_overwrite_an_unknown_file(tiny: Generator, tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    out.write_text("precious\n")
    with pytest.raises(InputError, match="already exists"):
        synthesize(CHUNKS, tiny, out, **FAST)
    assert out.read_text() == "precious\n" and not progress_of(out).exists()


def test_resume_with_other_settings_and_bad_arguments_refused(
    tiny: Generator, baseline: tuple[Path, SynthSummary, list], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="pairs_per_chunk=2"):  # checked before any file is touched
        synthesize(CHUNKS, tiny, baseline[0], **{**FAST, "pairs_per_chunk": 3})
    with pytest.raises(ConfigError, match="pairs_per_chunk"):
        synthesize(CHUNKS, tiny, tmp_path / "new.jsonl", **{**FAST, "pairs_per_chunk": 0})
    with pytest.raises(InputError, match="appears 2 times"):
        synthesize(CHUNKS + CHUNKS[:1], tiny, tmp_path / "new.jsonl", **FAST)
    assert not (tmp_path / "new.jsonl").exists()


@dataclass
class ScriptedStream:
    text: str
    usage: Usage = field(default_factory=Usage)

    def __iter__(self) -> Iterator[str]:
        self.usage.completion_tokens = len(self.text.split())
        yield self.text


class ScriptedGenerator:
    """A test double with fixed answers in the requested format, to test the parser and the filter, not the LM."""

    name = "scripted"

    def __init__(self, pairs: dict[str, str], rewrites: dict[str, str]) -> None:
        self.pairs, self.rewrites, self.calls = pairs, rewrites, 0

    def stream(self, messages: list[dict[str, str]], params: SamplingParams) -> ScriptedStream:
        self.calls += 1
        prompt = messages[-1]["content"]
        table = self.rewrites if prompt.startswith("Rewrite") else self.pairs
        return ScriptedStream(next((reply for key, reply in table.items() if key in prompt), ""))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def scripted() -> ScriptedGenerator:
    pairs = {
        "opens at nine": "Q: When does the library open?\nA: At nine.\n"
        "Q: When does the library close?\nA: At 9 in the evening.\n"  # 9 is not in the text
        "Q: When does the library open?\nA: At nine.",  # duplicate
        "forty-five dollars": "1. Q: What does a non-resident card cost?\n   A: forty-five dollars per year",
        "Room 12": "Q: Which room can be booked?\nA: Room 12\nQ: For how long can Room 12 be booked?\nA: 3 hours",
    }
    rewrites = {
        "When does the library open?": "Here you go:\n1. At what time does the library open?\n"
        "2. When does the library open?",  # unchanged
        "non-resident card": "- How much is a non-resident card?\n- Is a non-resident card forty-five dollars?",
    }
    return ScriptedGenerator(pairs, rewrites)


def test_grounded_pairs_kept_and_ungrounded_rejected(tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    summary = synthesize(CHUNKS, scripted(), out, pairs_per_chunk=3, paraphrases=2, progress=False)
    rows = [(r["prompt"], r["completion"], r["chunk"], r["kind"]) for r in records(out)]
    assert rows == [
        ("When does the library open?", "At nine.", "docs/library.md#0", "original"),
        ("At what time does the library open?", "At nine.", "docs/library.md#0", "paraphrase"),
        ("What does a non-resident card cost?", "forty-five dollars per year", "docs/library.md#1", "original"),
        ("How much is a non-resident card?", "forty-five dollars per year", "docs/library.md#1", "paraphrase"),
        ("Which room can be booked?", "Room 12", "docs/faq.md#1", "original"),
        ("For how long can Room 12 be booked?", "3 hours", "docs/faq.md#1", "original"),
    ]
    assert summary.rejected_by == {"duplicate": 1, "leaks_answer": 1, "ungrounded": 1, "unchanged": 1}
    assert (summary.generated, summary.kept, summary.originals, summary.paraphrases) == (10, 6, 4, 2)
    assert summary.unparsed == 1  # the FAQ chunk had no scripted reply


def test_crash_mid_chunk_is_redone_and_duplicates_span_a_resume(tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    synthesize(CHUNKS[:1], scripted(), out, progress=False)
    clean = out.read_bytes()
    # A crash after a later chunk's records were written but before its marker, mid-way through a line.
    orphan = {"prompt": "x?", "completion": "y", "source": "s", "chunk": CHUNKS[1].id, "kind": "original"}
    out.write_bytes(clean + (json.dumps(orphan) + "\n").encode() + b'{"prompt": "half')
    progress_of(out).write_bytes(progress_of(out).read_bytes() + b"docs/libr")
    generator = scripted()
    # The same question as chunk 0 (kept before the crash) must still count as a duplicate.
    generator.pairs["forty-five dollars"] = "Q: When does the library open?\nA: forty-five dollars"
    summary = synthesize(CHUNKS[:2], generator, out, progress=False)
    assert summary.done_before == 1 and summary.rejected_by == {"duplicate": 1}
    assert out.read_bytes() == clean
    assert progress_of(out).read_text().splitlines()[1:] == [CHUNKS[0].id, CHUNKS[1].id]

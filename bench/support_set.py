"""A calibration set for the support check from real long documents, the drafts the default models write on it,
and every support rule measured on them (bench/support_checks.py).

squad-long's question articles are split, by article and seeded, into an indexed half (their questions are
answerable) and a withheld half (their questions are unanswerable here: their article is not in the index),
with distractor articles indexed beside them; each half is split again by article into dev (for tuning) and
test (never tuned on). Every question is answered by the rag path with nothing withheld, so the drafts and
the passages they were written from can be judged by any check afterwards (bench/support_checks.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import replace
from itertools import zip_longest
from pathlib import Path
from typing import Any

from bench.common import say

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad-long"


def prompt_variants() -> dict[str, str]:
    """The system prompts measured: the shipped one, the same without its refusal sentence, and one reworded so
    the model refuses only when no document mentions what is asked."""
    from rag.prompt import NOT_FOUND, SYSTEM_PROMPT

    refusal = f'If they do not contain the answer, say: "{NOT_FOUND}"'
    without = SYSTEM_PROMPT.replace(refusal, "").strip()
    reworded = SYSTEM_PROMPT.replace(
        refusal,
        "Answer from what the documents say, even when they say it in other words; only when no document "
        f'mentions what is asked, say: "{NOT_FOUND}"',
    )
    assert without != SYSTEM_PROMPT and reworded != SYSTEM_PROMPT, "the shipped prompt's refusal sentence changed"
    return {"shipped": SYSTEM_PROMPT, "without": without, "reworded": reworded}


def split_articles(questions: list[dict[str, Any]], docs: list[str], seed: int, distractors: int) -> dict[str, Any]:
    """Question articles -> indexed / withheld, each -> dev / test; plus the distractor articles indexed."""
    rng = random.Random(seed)
    gold = sorted({q["doc"] for q in questions})
    rng.shuffle(gold)
    indexed, withheld = gold[: len(gold) // 2], gold[len(gold) // 2 :]
    others = sorted(set(docs) - set(gold))
    rng.shuffle(others)
    halves = {}
    for name, group in (("answerable", indexed), ("unanswerable", withheld)):
        halves[name] = {"dev": sorted(group[: len(group) // 2]), "test": sorted(group[len(group) // 2 :])}
    return {"seed": seed, "articles": halves, "distractors": sorted(others[:distractors]), "indexed": indexed}


def calibration_questions(
    questions: list[dict[str, Any]], split: dict[str, Any], per_class: int, seed: int
) -> list[dict[str, Any]]:
    """Up to `per_class` questions per class and part, seeded; unanswerable ones keep their article's answer
    as `withheld_answers` (never shown to the model) so a draft that guessed it anyway can be found."""
    rng = random.Random(seed)
    chosen = []
    for kind, parts in split["articles"].items():
        for part, articles in parts.items():
            pool = [q for q in questions if q["doc"] in set(articles)]
            rng.shuffle(pool)
            for q in sorted(pool[:per_class], key=lambda q: q["id"]):
                row = {"id": q["id"], "question": q["question"], "part": part, "kind": kind, "doc": q["doc"]}
                row["answers" if kind == "answerable" else "withheld_answers"] = q["answers"]
                if kind == "unanswerable":
                    row["answers"] = []
                chosen.append(row)
    return chosen


def interleaved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row of each (kind, part) in turn, so that a run stopped early still measures every group."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["kind"], row["part"]), []).append(row)
    return [row for turn in zip_longest(*groups.values()) for row in turn if row is not None]


def rag_answerer(out: Path, overrides: list[str]) -> Any:
    """The rag answerer over out/corpus, indexed under out/home (an index already there is brought up to date)."""
    from models.config import load_config
    from models.embedders import build_embedder
    from rag.ingest import ingest
    from ragtune.compose import build_answerer, quiet_libraries

    quiet_libraries()
    os.environ["RAGTUNE_HOME"] = str(out / "home")
    config = load_config(None, overrides)
    embedder = build_embedder(config.embedder)
    summary = ingest([out / "corpus"], config, embedder, progress=False)
    say(f"index: {summary.line()}")
    return build_answerer(replace(config, mode="rag"), embedder=embedder, progress=False)


def answer_all(rows: list[dict[str, Any]], out: Path, overrides: list[str], prompt: str = "shipped") -> None:
    """Answer every row not yet in its drafts file (out/drafts.jsonl for the shipped prompt, else
    out/drafts-PROMPT.jsonl) with the rag path, nothing withheld (resumable)."""
    import rag.prompt
    from models.answer import collect

    # Nothing withheld, so every draft can be judged; the model's own likelihood picks the citation, so its
    # choices can be held against attribution's on the same drafts.
    answerer = rag_answerer(out, ["rag.refuse_unsupported=false", "rag.citation=likelihood", *overrides])
    # The variant replaces the system prompt build_messages reads, for this process only.
    rag.prompt.SYSTEM_PROMPT = prompt_variants()[prompt]
    done_path = out / ("drafts.jsonl" if prompt == "shipped" else f"drafts-{prompt}.jsonl")
    done = {json.loads(line)["id"] for line in done_path.read_text().splitlines()} if done_path.exists() else set()
    todo = interleaved([r for r in rows if r["id"] not in done])
    started = time.perf_counter()
    with done_path.open("a", encoding="utf-8") as sink:
        for n, row in enumerate(todo, 1):
            answer = collect(row["question"], answerer.events(row["question"]))
            record = {
                **row,
                "text": answer.text,
                "refused": answer.refused,
                "draft": answer.draft,
                "grounded": answer.grounded,
                "sources": [
                    {"number": s.number, "path": Path(s.path).name, "text": s.text, "scores": s.scores}
                    for s in answer.sources
                ],
                "timings": answer.timings,
            }
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            if n % 10 == 0 or n == len(todo):
                rate = (time.perf_counter() - started) / n
                say(f"answered {n}/{len(todo)} ({rate:.1f} s each)")


def prepare(out: Path, per_class: int, distractors: int, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The split (out/split.json), its questions' sample (out/questions.jsonl) and the corpus to index (out/corpus):
    the split and the sample, as written."""
    questions = read_questions()
    docs = sorted(p.name for p in (SQUAD / "docs").glob("*.txt"))
    split = split_articles(questions, docs, seed, distractors)
    rows = calibration_questions(questions, split, per_class, seed)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name in [*split["indexed"], *split["distractors"]]:
        if not (corpus / name).exists():
            shutil.copyfile(SQUAD / "docs" / name, corpus / name)
    (out / "split.json").write_text(json.dumps(split, indent=2))
    (out / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return split, rows


def read_questions() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SQUAD / "questions.jsonl").read_text().splitlines()]


def build(out: Path, per_class: int, distractors: int, seed: int, overrides: list[str], prompt: str) -> None:
    split, rows = prepare(out, per_class, distractors, seed)
    counts = {(r["kind"], r["part"]): 0 for r in rows}
    for r in rows:
        counts[(r["kind"], r["part"])] += 1
    say(f"calibration set: {counts}; {len(split['indexed'])} + {len(split['distractors'])} articles indexed")
    answer_all(rows, out, overrides, prompt)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/support"), help="folder for the set and drafts")
    parser.add_argument("--per-class", type=int, default=75, help="questions per class (answerable or not) per part")
    parser.add_argument("--distractors", type=int, default=60, help="articles without questions indexed beside")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument(
        "--prompt",
        choices=("shipped", "without", "reworded"),
        default="shipped",
        help="the system prompt's refusal sentence: as shipped, left out, or reworded (bench/support_set.py)",
    )
    args = parser.parse_args(argv)
    build(args.out, args.per_class, args.distractors, args.seed, args.set, args.prompt)
    from bench.support_checks import main as measure_checks

    drafts = args.out / ("drafts.jsonl" if args.prompt == "shipped" else f"drafts-{args.prompt}.jsonl")
    checked = args.out / ("checks.json" if args.prompt == "shipped" else f"checks-{args.prompt}.json")
    curve = ["--curve", str(args.out / "question-match.png")] if args.prompt == "shipped" else []
    return measure_checks(["--drafts", str(drafts), "--out", str(checked), *curve])

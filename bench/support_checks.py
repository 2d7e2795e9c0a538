"""Every support check against the calibration drafts (bench/support_set.py): false refusals and refusal recall.

A question counts as refused when the model refused it itself or the check finds the answer unsupported by the
passages it was written from. On answerable questions that is a false refusal; on unanswerable ones (their
article not indexed) it is the right reply. Each rule is reported on dev (where the default is chosen) and on
test (never tuned on), with 95% bootstrap intervals, plus the share of answerable questions whose shown
answer holds an accepted answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import say, table
from ragtune.compare.metrics import contains, summary

Check = Callable[[dict[str, Any]], bool]  # a draft row -> supported?
# A draft row as bench/support_set.py writes it: the question's fields, then the answer's.
FIELDS = {"id", "question", "part", "kind", "doc", "answers", "withheld_answers"}
FIELDS |= {"text", "refused", "draft", "grounded", "sources", "timings"}
REQUIRED = ("id", "question", "part", "kind", "answers", "text", "refused", "sources")


class DraftsError(ValueError):
    """A drafts file line that is not a draft row; the message names the file, the line and the fix."""


def read_drafts(path: Path) -> list[dict[str, Any]]:
    """Every draft row of `path`, each checked: JSON, known fields only, the required ones, known kind and part."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DraftsError(f"{where}: not valid JSON ({exc.msg}); each line is one draft row") from None
        if not isinstance(row, dict):
            raise DraftsError(f"{where}: each line should be a JSON object (a draft row)")
        unknown = sorted(set(row) - FIELDS)
        missing = [key for key in REQUIRED if key not in row]
        if unknown or missing:
            what = f"unknown field(s) {unknown}" if unknown else f"missing field(s) {missing}"
            raise DraftsError(f"{where}: {what}; a draft row has {sorted(FIELDS)} (bench/support_set.py writes them)")
        if row["kind"] not in ("answerable", "unanswerable") or row["part"] not in ("dev", "test"):
            raise DraftsError(f"{where}: 'kind' should be answerable or unanswerable and 'part' dev or test")
        if row["kind"] == "answerable" and not row["answers"]:
            raise DraftsError(f"{where}: an answerable question with no 'answers'; list its accepted answers")
        rows.append(row)
    return rows


def checks(rows: list[dict[str, Any]]) -> dict[str, Check]:
    """The rules measured: the first whole-answer check, per-sentence attribution at several settings, the
    question's coverage, the closest retrieved sentence, and (with bench/support_signals.py's file) the LM's
    own evidence. `rows` carry the features (`closest`, `lm`) that `with_features` added."""
    from rag.attribution import PARTLY, SUPPORTED, UNSUPPORTED, Rule, attribute, verdict
    from rag.grounding import check_support
    from rag.prompt import NOT_FOUND

    def together(row: dict[str, Any]) -> str:
        return "\n".join(s["text"] for s in row["sources"])

    def sentence_rule(share: float, echo: bool, accept: tuple[str, ...]) -> Check:
        def check(row: dict[str, Any]) -> bool:
            found = attribute(row["text"], passages(row), row["question"], NOT_FOUND, Rule(share, echo))
            return verdict(found) in accept

        return check

    rules: dict[str, Check] = {
        "whole answer, passages together (before)": lambda r: (
            check_support(r["text"], together(r), r["question"], NOT_FOUND).supported
        ),
        "whole answer, no question-echo rule": lambda r: check_support(r["text"], together(r), "", NOT_FOUND).supported,
        "never refuse (no check)": lambda r: True,
    }
    for echo in (True, False):
        for share in (0.0, 0.4, 0.6, 0.8):
            for accept, label in (((SUPPORTED,), "supported"), ((SUPPORTED, PARTLY), "supported or partly")):
                name = f"per sentence, share {share:.1f}, echo {'on' if echo else 'off'}, shown if {label}"
                rules[name] = sentence_rule(share, echo, accept)
    # The question checked too: the passages must hold its names and numbers and a share of its key terms (as first
    # measured: spelled numbers required, names matched exactly).
    for question_share in (0.3, 0.4, 0.5):
        for accept, label in (((SUPPORTED,), "supported"), ((SUPPORTED, PARTLY), "supported or partly")):

            def covered_rule(row: dict[str, Any], share: float = question_share, accept: tuple = accept) -> bool:
                found = attribute(row["text"], passages(row), row["question"], NOT_FOUND)
                return verdict(found, covered_before(row["question"], passages(row), share)) in accept

            name = f"question covered (share {question_share:.1f}) and per sentence, share 0.0, shown if {label}"
            rules[name] = covered_rule
    # ...and by the passage an answer sentence leans on, by itself: it flags right answers whose passage leaves
    # the question's names to a neighbouring chunk (docs/trust.md).
    for leaned in (0.0, 0.25, 0.35):

        def leaned_rule(row: dict[str, Any], leaned: float = leaned) -> bool:
            found, texts = attribute(row["text"], passages(row), row["question"], NOT_FOUND), dict(passages(row))
            leaned_on = {a.source for a in found if a.support in (SUPPORTED, PARTLY) and a.source in texts}
            alone = any(covered_before(row["question"], [(n, texts[n])], leaned) for n in leaned_on)
            return verdict(found, alone and covered_before(row["question"], passages(row), 0.4)) != UNSUPPORTED

        name = f"question covered (share 0.4), and by the passage leaned on alone ({leaned:.2f}), shown if partly"
        rules[name] = leaned_rule
    # The passages' closest sentence to the question, alone and with the question check (the previous default:
    # share 0.3, 0.45), then rag.question_match's model of both (bench/support_questions.py) at several floors.
    for floor in (0.4, 0.43, 0.45, 0.47, 0.5):
        rules[f"closest sentence >= {floor:.2f} (no sentence check)"] = partial(matches, floor=floor)
        for question_share in (0.3, 0.4):
            name = f"question covered (share {question_share:.1f}), closest sentence >= {floor:.2f}, shown if partly"
            rules[name] = partial(threshold_rule, floor=floor, share=question_share)
    for floor in (0.15, 0.2, 0.25, 0.3, 0.35):
        rules[f"the question model's chance >= {floor:.2f}, shown if partly"] = partial(shipped_rule, floor=floor)
    if any("lm" in row for row in rows):
        rules.update(lm_rules())
    # The retrieval's own evidence: a question whose article is not indexed finds only weaker passages.
    for floor in (0.3, 0.4, 0.5, 0.6):
        rules[f"best passage's dense similarity >= {floor}"] = partial(close_enough, floor=floor)
        for share in (0.0, 0.4, 0.6):
            for accept, label in (((SUPPORTED,), "supported"), ((SUPPORTED, PARTLY), "supported or partly")):
                sentences = sentence_rule(share, False, accept)
                name = f"dense >= {floor} and per sentence, share {share:.1f}, echo off, shown if {label}"
                rules[name] = partial(both, first=partial(close_enough, floor=floor), second=sentences)
    return rules


def lm_rules() -> dict[str, Check]:
    """The default LM's evidence: how much the passages raise the answer's likelihood per token (pointwise mutual
    information), its mean log-probability with them, and the judge prompt's yes-over-no margin; alone and on top
    of the shipped rule (the question covered, the closest sentence, per sentence)."""

    def signal(row: dict[str, Any], name: str) -> float:
        lm = row.get("lm")
        if lm is None:  # the model's own refusal, or no passage: nothing was weighed
            return float("inf")
        per_token = max(lm["tokens"], 1)
        return {
            "pmi": (lm["context"] - lm["empty"]) / per_token,
            "mean": lm["context"] / per_token,
            "judge": lm["yes"] - lm["no"],
        }[name]

    rules: dict[str, Check] = {}
    floors = {"pmi": (0.5, 1.0, 1.5), "mean": (-0.6, -0.5, -0.4, -0.3), "judge": (-0.5, -0.25, 0.0)}
    for name, levels in floors.items():
        for floor in levels:
            rules[f"LM {name} >= {floor}"] = lambda r, n=name, f=floor: signal(r, n) >= f
            rules[f"LM {name} >= {floor}, with the shipped rule"] = lambda r, n=name, f=floor: (
                signal(r, n) >= f and shipped_rule(r)
            )
    return rules


def with_features(rows: list[dict[str, Any]], signals: Path | None) -> list[dict[str, Any]]:
    """Each row with `closest` (its passages' closest sentence to the question, by the packaged embedder) and,
    from a bench/support_signals.py file, `lm` (its signals, for answered drafts)."""
    from bench.support_signals import read_signals
    from models.config import load_config
    from models.embedders import build_embedder
    from rag.question_match import closest_sentence

    weighed = read_signals(signals) if signals else {}  # first: a bad file fails before the embedder loads
    embedder = build_embedder(load_config(None, []).embedder)
    out = []
    for row in rows:
        vector = embedder.encode([row["question"]])[0]
        closest = closest_sentence(embedder, vector, [s["text"] for s in row["sources"]])
        out.append({**row, "closest": closest, **({"lm": weighed[row["id"]]} if row["id"] in weighed else {})})
    return out


def passages(row: dict[str, Any]) -> list[tuple[int, str]]:
    """A draft's retrieved passages as (number, text), as the answerer's checks take them."""
    return [(s["number"], s["text"]) for s in row["sources"]]


def shipped_rule(row: dict[str, Any], floor: float | None = None) -> bool:
    """The answerer's rule (rag/pipeline.py), at its defaults unless told: rag.question_match's model gives the
    passages at least a `floor` chance of answering the question, and some answer sentence is supported."""
    from rag.attribution import UNSUPPORTED, attribute, verdict
    from rag.prompt import NOT_FOUND
    from rag.question_match import DEFAULT_FLOOR, chance_given

    floor = DEFAULT_FLOOR if floor is None else floor
    retrieved = passages(row)
    chance = chance_given(row["question"], [text for _, text in retrieved], row["closest"])
    found = attribute(row["text"], retrieved, row["question"], NOT_FOUND)
    return verdict(found, chance >= floor) != UNSUPPORTED


def threshold_rule(row: dict[str, Any], floor: float = 0.45, share: float = 0.3) -> bool:
    """The previous default: the passages cover the question (a share of its key terms; spelled numbers required,
    names exact), a sentence of theirs comes within the cosine `floor` of it, and some answer sentence is
    supported."""
    from rag.attribution import UNSUPPORTED, attribute, verdict
    from rag.prompt import NOT_FOUND

    retrieved = passages(row)
    found = attribute(row["text"], retrieved, row["question"], NOT_FOUND)
    return verdict(found, matches(row, floor) and covered_before(row["question"], retrieved, share)) != UNSUPPORTED


def covered_before(question: str, retrieved: list[tuple[int, str]], share: float) -> bool:
    """rag.attribution.covers as first measured: spelled numbers in the question required, names matched exactly."""
    from rag.attribution import covers

    return covers(question, retrieved, share, spelled=True, alike=1.0)


def matches(row: dict[str, Any], floor: float) -> bool:
    return row["closest"] >= floor


def close_enough(row: dict[str, Any], floor: float) -> bool:
    return max((s["scores"].get("dense", -1.0) for s in row["sources"]), default=-1.0) >= floor


def both(row: dict[str, Any], first: Check, second: Check) -> bool:
    return first(row) and second(row)


def refused(row: dict[str, Any], check: Check) -> bool:
    return bool(row["refused"]) or not check(row)


def measure(rows: list[dict[str, Any]], check: Check) -> dict[str, Any]:
    answerable = [r for r in rows if r["kind"] == "answerable"]
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]
    shown = [0.0 if refused(r, check) else contains(r["text"], r["answers"]) for r in answerable]
    return {
        "false_refusal": summary([float(refused(r, check)) for r in answerable]),
        "refusal_recall": summary([float(refused(r, check)) for r in unanswerable]),
        "answer_contained": summary(shown),
    }


def citation_accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """On answerable questions answered with a citation: how often the cited passage comes from the question's
    own article and holds an accepted answer, for the marker the drafts carry (chosen by likelihood, or written
    by the model) and for the passage attribution would have chosen from the same text."""
    from rag.attribution import attribute, supporting_sources
    from rag.prompt import NOT_FOUND, cited_numbers

    likelihood, attribution = [], []
    for row in rows:
        marks = cited_numbers(row["text"])
        if row["kind"] != "answerable" or row["refused"] or not marks:
            continue
        sources = row["sources"]
        evidence = {s["number"] for s in sources if s["path"] == row["doc"] and contains(s["text"], row["answers"])}
        found = attribute(row["text"], passages(row), row["question"], NOT_FOUND)  # the shipped rule, as answering uses
        chosen = next(iter(supporting_sources(found)), next((a.source for a in found if a.source), marks[-1]))
        likelihood.append(float(marks[-1] in evidence))
        attribution.append(float(chosen in evidence))
    return {"likelihood (the drafts' markers)": summary(likelihood), "attribution": summary(attribution)}


FLOORS = [round(0.05 + 0.01 * i, 2) for i in range(56)]  # the rag.question_match values a trade-off curve walks


def curve(rows: list[dict[str, Any]], path: Path) -> None:
    """False refusals against unanswerable questions refused as rag.question_match moves (0.05 to 0.60), the
    shipped sentence rule beside it, dev and test: a PNG, the default marked."""
    points = {}
    for part in ("dev", "test"):
        found = [measure([r for r in rows if r["part"] == part], partial(shipped_rule, floor=f)) for f in FLOORS]
        points[part] = [(100 * p["false_refusal"]["mean"], 100 * p["refusal_recall"]["mean"]) for p in found]
    draw_trade_off(
        points, {}, "flagged or refused", "rag.question_match from 0.05 to 0.60 (circled: the default)", path
    )


def draw_trade_off(
    points: dict[str, list[tuple[float, float]]],
    previous: dict[str, tuple[float, float]],
    what: str,
    title: str,
    path: Path,
) -> None:
    """Per part, (answerable %, unanswerable %) `what` at each of FLOORS, the default circled and a `previous`
    rule's point crossed, the 5% / 80% aims dotted: a PNG."""
    from rag.question_match import DEFAULT_FLOOR
    from ragtune.compare.charts import new_figure, save_figure

    plt, fig, ax = new_figure()
    for part, colour in (("dev", "#1f77b4"), ("test", "#d62728")):
        xs, ys = zip(*points[part])
        ax.plot(xs, ys, marker=".", color=colour, label=part)
        chosen = FLOORS.index(DEFAULT_FLOOR)
        ax.annotate(f"{DEFAULT_FLOOR}", (xs[chosen], ys[chosen]), textcoords="offset points", xytext=(6, -10))
        ax.plot([xs[chosen]], [ys[chosen]], marker="o", color=colour, markersize=8, fillstyle="none")
        if part in previous:
            ax.plot(*([value] for value in previous[part]), marker="x", color=colour)
    ax.axvline(5, color="#8c8c8c", linestyle=":", linewidth=1)
    ax.axhline(80, color="#8c8c8c", linestyle=":", linewidth=1)
    ax.set_xlabel(f"answerable questions {what} (%)")
    ax.set_ylabel(f"unanswerable questions {what} (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    save_figure(plt, fig, path)


def pct(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "-"
    low, high = s["ci95"]
    return f"{100 * s['mean']:.1f}% ({100 * low:.0f}-{100 * high:.0f})"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafts", type=Path, default=Path("runs/support/drafts.jsonl"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument("--signals", type=Path, help="the LM's evidence per draft (bench/support_signals.py)")
    parser.add_argument("--curve", type=Path, help="draw rag.question_match's trade-off curve to this PNG")
    args = parser.parse_args(argv)
    try:
        rows = with_features(read_drafts(args.drafts), args.signals)
    except (DraftsError, OSError, ValueError) as exc:
        say(f"error: {exc}")
        return 2
    rules = checks(rows)
    results = {}
    for part in ("dev", "test"):
        part_rows = [r for r in rows if r["part"] == part]
        counts = {k: sum(r["kind"] == k for r in part_rows) for k in ("answerable", "unanswerable")}
        say(f"\n{part}: {counts['answerable']} answerable, {counts['unanswerable']} unanswerable questions")
        body = []
        for name, check in rules.items():
            found = measure(part_rows, check)
            results.setdefault(part, {})[name] = found
            figures = [pct(found[key]) for key in ("false_refusal", "refusal_recall", "answer_contained")]
            body.append([name, *figures])
        say(table("rule | false refusals | unanswerable refused | answer shown and contained", body))
        cited = citation_accuracy(part_rows)
        results[part]["citations"] = cited
        header = "cited passage chosen by | holds the answer (from the question's article)"
        say(table(header, [[k, pct(v)] for k, v in cited.items()]))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if args.curve:
        curve(rows, args.curve)
    return 0

"""The question side of the support check on every question of the calibration articles, retrieval only.

bench/support_set.py has the default LM answer 75 questions per kind and part (half an hour); whether the
retrieved passages answer a question at all needs no answer, so it is measured here on every question of the
same articles, retrieved as the answerer retrieves them: about eight times the questions, the same split by
article into dev (where the check is chosen and fitted) and test (never tuned on). A question is flagged when
the check says its passages do not answer it; on answerable questions that is a false refusal, on unanswerable
ones the right reply. The answer's own checks and the model's own refusals come on top (bench/support_checks.py,
on the drafts).

Candidates: rules of thresholds (the passages hold the question's names and numbers and a share of its key terms,
rag.attribution.covers, and a sentence of theirs comes within a cosine floor of it), over the share (0.2 to 0.5),
the floor (0.40 to 0.55), spelled numbers in the question required or not and names matched exactly or spelled
alike; and rag.question_match's logistic model of the same three signals, scored on dev cross-validated by
article (each fold's model and floor fitted without its articles). The default is the candidate flagging the
most unanswerable dev questions with at most --budget of answerable ones flagged (the 5% target less the
model's own refusals on the dev drafts); fewer flagged on a tie, then the candidate listed first. The model
shipped in rag/question_match.py is the one fitted on all of dev, printed here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import say, table
from models.storage import atomic_write_json, atomic_write_text
from ragtune.compare.metrics import summary

FLOORS = tuple(round(0.40 + 0.01 * i, 2) for i in range(16))
SHARES = (0.2, 0.3, 0.4, 0.5)
# The 5% false-refusal target less the default model's own refusals of answerable dev drafts (1 of 75).
BUDGET = 0.037
FOLDS = 6  # cross-validation by article: 24 dev articles, 4 held out at a time
Row = dict[str, Any]


class QuestionRule(NamedTuple):
    """Thresholds: rag.attribution.covers's settings and a closest-sentence cosine floor."""

    share: float
    floor: float
    spelled: bool  # spelled numbers in the question must be found
    alike: float  # names held when spelled this much alike (1: exactly)

    def label(self) -> str:
        spelled = "spelled numbers required" if self.spelled else "spelled numbers not required"
        names = "names exact" if self.alike >= 1 else f"names alike >= {self.alike}"
        return f"share {self.share:.1f}, closest sentence >= {self.floor:.2f}, {spelled}, {names}"


def rules() -> list[QuestionRule]:
    """Every threshold rule measured, the simpler variants first (the order breaks ties)."""
    from rag.attribution import ALIKE

    return [
        QuestionRule(share, floor, spelled, alike)
        for spelled, alike in ((True, 1.0), (False, 1.0), (True, ALIKE), (False, ALIKE))
        for share, floor in product(SHARES, FLOORS)
    ]


def retrieve_all(out: Path, overrides: list[str]) -> list[Row]:
    """Every question of the split's question articles with the passages the answerer would read and their
    closest sentence's similarity to it (written to out/questions-retrieved.jsonl)."""
    from bench.support_set import prepare, rag_answerer, read_questions
    from rag.question_match import closest_sentence

    split, _ = prepare(out, per_class=75, distractors=60, seed=0)
    answerer = rag_answerer(out, overrides)
    part_of = {
        doc: (kind, part) for kind, parts in split["articles"].items() for part, docs in parts.items() for doc in docs
    }
    rows = []
    for question in (q for q in read_questions() if q["doc"] in part_of):
        _, sources, retrieval = answerer.retrieved(question["question"])
        texts = [s.text for s in sources]
        closest = closest_sentence(answerer.retriever.embedder, retrieval.vector, texts)
        kind, part = part_of[question["doc"]]
        rows.append({**question, "kind": kind, "part": part, "passages": texts, "closest": closest})
        if len(rows) % 100 == 0:
            say(f"retrieved {len(rows)} questions")
    atomic_write_text(out / "questions-retrieved.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


class Flags:
    """Which questions each candidate flags; the passages' coverage is worked out once per question and setting."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows, self._coverage = rows, {}

    def coverage(self, row: Row, spelled: bool = False, alike: float | None = None) -> tuple[bool, float]:
        from rag.attribution import ALIKE, coverage

        alike = ALIKE if alike is None else alike
        key = (row["id"], spelled, alike)
        if key not in self._coverage:
            self._coverage[key] = coverage(row["question"], list(enumerate(row["passages"], 1)), spelled, alike)
        return self._coverage[key]

    def rule_flags(self, row: Row, rule: QuestionRule) -> bool:
        named, held = self.coverage(row, rule.spelled, rule.alike)
        return not (row["closest"] >= rule.floor and named and held >= rule.share)

    def by_rule(self, rule: QuestionRule, part: str) -> dict[str, list[float]]:
        return self.rates_of([r for r in self.rows if r["part"] == part], lambda row: self.rule_flags(row, rule))

    def by_model(self, model: Any, floor: float, part: str) -> dict[str, list[float]]:
        return self.rates_of([r for r in self.rows if r["part"] == part], lambda row: self.chance(model, row) < floor)

    def chance(self, model: Any, row: Row) -> float:
        named, held = self.coverage(row)
        return model.chance(row["closest"], named, held) if row["passages"] else 0.0

    @staticmethod
    def rates_of(rows: list[Row], flagged: Any) -> dict[str, list[float]]:
        """Per question of `rows`: 1 where flagged, by kind."""
        found: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
        for row in rows:
            found[row["kind"]].append(float(flagged(row)))
        return found

    def fit(self, rows: list[Row], budget: float) -> tuple[Any, float]:
        """rag.question_match's model fitted on `rows`, and the floor flagging at most `budget` of their
        answerable questions."""
        import numpy as np

        from rag.question_match import QuestionModel

        x = np.array([[row["closest"], *self.coverage(row)] for row in rows], dtype=np.float64)
        y = np.array([row["kind"] == "answerable" for row in rows], dtype=np.float64)
        intercept, closest, named, held = fit_logistic(x, y)
        model = QuestionModel(intercept, closest, named, held)
        chances = sorted(self.chance(model, row) for row in rows if row["kind"] == "answerable")
        allowed = int(budget * len(chances) + 1e-9)  # flagged: a chance strictly below the floor
        return model, chances[allowed] if allowed < len(chances) else 1.0

    def best_rule(self, rows: list[Row], budget: float) -> QuestionRule:
        """The threshold rule flagging the most unanswerable of `rows` with at most `budget` of their answerable
        ones flagged; fewer flagged on a tie, then the first listed."""

        def score(rule: QuestionRule) -> tuple[float, float]:
            found = self.rates_of(rows, lambda row: self.rule_flags(row, rule))
            return mean(found["unanswerable"]), -mean(found["answerable"])

        scored = [(rule, score(rule)) for rule in rules()]
        within = [(rule, s) for rule, s in scored if -s[1] <= budget]
        if not within:
            raise ValueError(f"no rule flags at most {budget:.1%} of answerable dev questions; raise --budget")
        return max(within, key=lambda pair: pair[1])[0]  # max keeps the first of equals

    def chosen(self, family: str, rows: list[Row], budget: float) -> Callable[[Row], bool]:
        """What the family's choice on `rows` flags: the best threshold rule, or the model fitted with its floor."""
        if family == "model":
            model, floor = self.fit(rows, budget)
            return lambda row: self.chance(model, row) < floor
        rule = self.best_rule(rows, budget)
        return lambda row: self.rule_flags(row, rule)

    def cross_validated(self, family: str, budget: float, folds: int = FOLDS) -> dict[str, list[float]]:
        """A family's flags on dev, each article's questions judged by the rule or model (and floor) chosen on the
        other folds' articles: how the choice holds on articles it did not see."""
        dev = [row for row in self.rows if row["part"] == "dev"]
        articles = sorted({row["doc"] for row in dev})
        fold_of = {doc: n % folds for n, doc in enumerate(articles)}
        found: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
        for fold in range(folds):
            flagged = self.chosen(family, [r for r in dev if fold_of[r["doc"]] != fold], budget)
            held_out = self.rates_of([r for r in dev if fold_of[r["doc"]] == fold], flagged)
            for kind in found:
                found[kind] += held_out[kind]
        return found


def fit_logistic(x: Any, y: Any, l2: float = 1.0, steps: int = 30) -> list[float]:
    """A logistic regression of `y` on `x` (Newton's method on standardised features, L2 penalty): the intercept
    and one weight per feature, on the features' own scale."""
    import numpy as np

    centre, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z, w = np.c_[np.ones(len(x)), (x - centre) / scale], np.zeros(x.shape[1] + 1)
    penalty = l2 * np.diag([0.0] + [1.0] * x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ w))
        w -= np.linalg.solve(z.T @ (z * (p * (1 - p))[:, None]) + penalty, z.T @ (p - y) + penalty @ w)
    weights = w[1:] / scale
    return [float(w[0] - weights @ centre), *map(float, weights)]


def choose(flags: Flags, rule: QuestionRule, model: Any, floor: float) -> str:
    """The family whose choice on all of dev (each flagging at most the budget of answerable dev questions: the
    best threshold `rule`, or the `model` fitted with its `floor`) flags the most unanswerable dev questions; the
    rule on a tie."""
    by_rule, by_model = flags.by_rule(rule, "dev"), flags.by_model(model, floor, "dev")
    return "model" if mean(by_model["unanswerable"]) > mean(by_rule["unanswerable"]) else "rule"


def curve(flags: Flags, before: QuestionRule, path: Path) -> None:
    """Answerable against unanswerable questions flagged as rag.question_match moves (0.05 to 0.60) under the
    shipped model, dev and test, the default circled and the previous rule crossed: a PNG."""
    from bench.support_checks import FLOORS, draw_trade_off
    from rag.question_match import MODEL

    def point(found: dict[str, list[float]]) -> tuple[float, float]:
        return 100 * mean(found["answerable"]), 100 * mean(found["unanswerable"])

    parts = ("dev", "test")
    points = {part: [point(flags.by_model(MODEL, floor, part)) for floor in FLOORS] for part in parts}
    previous = {part: point(flags.by_rule(before, part)) for part in parts}
    title = "rag.question_match from 0.05 to 0.60 (circled: the default; x: the previous rule)"
    draw_trade_off(points, previous, "flagged", title, path)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


FIELDS = ("id", "question", "kind", "part", "doc", "passages", "closest")  # what retrieve_all writes per question


class RowsError(ValueError):
    """A saved retrieval file that is not what retrieve_all writes; the message names the file, the line and the fix."""


def read_rows(path: Path) -> list[Row]:
    """The rows retrieve_all saved, each checked (JSON, its fields, a known kind and part), and every kind in both
    parts: a damaged or partial file is named with its line, and retrieving again (without --reuse) mends it."""
    again = "run without --reuse to retrieve again"
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RowsError(f"{path}:{number}: not valid JSON ({exc.msg}); {again}") from None
        missing = [key for key in FIELDS if not isinstance(row, dict) or key not in row]
        if missing:
            raise RowsError(f"{path}:{number}: missing field(s) {missing}; {again}")
        if row["kind"] not in ("answerable", "unanswerable") or row["part"] not in ("dev", "test"):
            raise RowsError(f"{path}:{number}: 'kind' should be answerable or unanswerable and 'part' dev or test")
        rows.append(row)
    groups = {(row["kind"], row["part"]) for row in rows}
    if len(groups) < 4:
        raise RowsError(f"{path}: needs answerable and unanswerable questions in both dev and test; {again}")
    return rows


def budget_share(text: str) -> float:
    """--budget: a share of the answerable dev questions, above 0 and below 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"should be a share above 0 and below 1 (0.037 is 3.7%), got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    from bench.support_checks import pct
    from rag.attribution import ALIKE
    from rag.question_match import DEFAULT_FLOOR, MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/support"), help="folder for the set and the index")
    parser.add_argument(
        "--budget", type=budget_share, default=BUDGET, help="most answerable dev questions flagged (a share in (0, 1))"
    )
    parser.add_argument("--reuse", action="store_true", help="read out/questions-retrieved.jsonl, do not retrieve")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--curve", type=Path, help="draw rag.question_match's trade-off curve to this PNG")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "questions-retrieved.jsonl"
    if args.reuse and not saved.exists():
        say(f"error: {saved} does not exist; run without --reuse first")
        return 2
    try:
        rows = read_rows(saved) if args.reuse else retrieve_all(args.out, args.set)
        flags = Flags(rows)
        dev = [r for r in rows if r["part"] == "dev"]
        model, floor = flags.fit(dev, args.budget)
        best_rule = flags.best_rule(dev, args.budget)
    except (RowsError, ValueError) as exc:
        say(f"error: {exc}")
        return 2
    chosen = choose(flags, best_rule, model, floor)
    say(f"\nchosen on dev within {args.budget:.1%}: the {'logistic model' if chosen == 'model' else 'threshold rule'}")
    say(f"fitted on all dev: {model}, floor {floor:.4f}\nshipped: {MODEL}, rag.question_match {DEFAULT_FLOOR}")
    before = QuestionRule(0.3, 0.45, True, 1.0)
    both = ("dev", "test")
    shown: dict[str, dict[str, dict[str, list[float]]]] = {
        f"before: {before.label()}": {p: flags.by_rule(before, p) for p in both},
        "before, spelled numbers not required, names alike": {
            p: flags.by_rule(before._replace(spelled=False, alike=ALIKE), p) for p in both
        },
        f"the best threshold rule on dev: {best_rule.label()}": {p: flags.by_rule(best_rule, p) for p in both},
        "the best threshold rule, dev cross-validated by article": {"dev": flags.cross_validated("rule", args.budget)},
        "the logistic model fitted on dev, with its floor": {p: flags.by_model(model, floor, p) for p in both},
        "the logistic model, dev cross-validated by article": {"dev": flags.cross_validated("model", args.budget)},
        f"shipped: rag/question_match.py's model, rag.question_match {DEFAULT_FLOOR}": {
            p: flags.by_model(MODEL, DEFAULT_FLOOR, p) for p in both
        },
    }
    results: dict[str, Any] = {"chosen": chosen, "fitted": {**model.__dict__, "floor": floor}, "checks": {}}
    counts = {part: sum(r["part"] == part for r in rows) for part in ("dev", "test")}
    say(f"\n{len(rows)} questions ({counts['dev']} dev, {counts['test']} test); flagged, with 95% intervals")
    body = []
    for name, parts in shown.items():
        figures = []
        for part in ("dev", "test"):
            found = {kind: summary(values) for kind, values in parts.get(part, {}).items()}
            results["checks"].setdefault(name, {})[part] = found
            figures += [pct(found[kind]) if found else "-" for kind in ("answerable", "unanswerable")]
        body.append([name, *figures])
    header = (
        "question check | dev: answerable flagged | dev: unanswerable flagged | test: answerable | test: unanswerable"
    )
    say(table(header, body))
    atomic_write_json(args.out / "questions-checked.json", results)
    if args.curve:
        curve(flags, before, args.curve)
    return 0

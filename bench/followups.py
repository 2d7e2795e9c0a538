"""Follow-up questions from real long documents, and how well each way of rewriting them retrieves their evidence.

squad-long's questions come in pairs on one article: the first as asked, the second with the article's subject
(its title words as they appear in the question: "Tesla", "the Super Bowl") replaced by a pronoun ("he", "it",
"they"; "his", "its", "their" for possessives); only pairs where the replacement happened are kept. Articles are
split, seeded, into dev (where the rules and the prompt were tuned) and test (never tuned on). The pairs'
articles and distractor articles are indexed with the default embedder and retriever into a temporary
RAGTUNE_HOME, and article hit@k and evidence hit@k (a retrieved chunk holds an accepted answer) are reported for
the first question (the reference), the follow-up alone, and the follow-up made standalone by the rules and by
the LM (rag.followup), with 95% bootstrap intervals and the LM's time per rewrite.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import busy_note, loadavg, say, table
from ragtune.compare.metrics import contains, summary

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad-long"
WAYS = ("first question", "follow-up alone", "rules", "lm")
# Title words that name no subject on their own ("the European Council" is not the European Union's law).
_GENERIC = {"of", "the", "and", "upon", "law", "music", "state", "system", "theory", "number", "school", "program"}
_GENERIC |= {"united", "european", "southern", "american", "french", "indian", "war", "company", "university", "who"}
# A word before the subject that makes it a modifier ("What Harvard alumni", "a Florida city"), not the subject.
_MODIFIER_BEFORE = {"what", "which", "a", "an", "whose", "many", "some", "any", "each", "every"}


def title(doc: Path) -> str:
    """The article's title (its first line), without a parenthesised or comma-separated qualifier."""
    line = doc.read_text(encoding="utf-8").split("\n", 1)[0].strip()
    return re.sub(r"\s*\(.*\)$", "", line).split(",")[0].strip()


def subject_forms(name: str) -> list[str]:
    """The ways a question may name the article: its whole title, then each shorter run of its words that is a
    name (capitalised, not a generic word alone), longest first."""
    words = name.split()
    runs = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    forms = [r for r in runs if r == name or (r[0].isupper() and r.lower() not in _GENERIC and len(r) > 2)]
    return sorted(forms, key=len, reverse=True)


def pronouns(doc: Path) -> dict[str, str]:
    """The pronouns standing for the article's subject ("subject", "object", "possessive"): he/him/his for a
    name (every title word capitalised) its opening paragraphs mostly call "he", they/them/their for a plural
    name, else it/it/its."""
    name, text = title(doc), doc.read_text(encoding="utf-8")[:4000].lower()
    person = all(w[0].isupper() for w in name.split())
    he, it = len(re.findall(r"\b(he|his|him)\b", text)), len(re.findall(r"\b(it|its)\b", text))
    if person and he >= 2 * it:
        return {"subject": "he", "object": "him", "possessive": "his"}
    if name.endswith("s") and not name.endswith("ss"):
        return {"subject": "they", "object": "them", "possessive": "their"}
    return {"subject": "it", "object": "it", "possessive": "its"}


# After these the pronoun is an object ("interest in him"), not a subject.
_PREPOSITIONS = {"in", "of", "to", "for", "with", "by", "about", "at", "from", "into", "on", "against", "than"}
_PREPOSITIONS |= {"between", "within", "throughout", "across", "under", "over", "during", "after", "before"}
# After these the next word is a verb ("did Tesla receive"), so a lowercase word after the subject is no noun.
_AUXILIARIES = {"did", "does", "do", "can", "could", "will", "would", "should", "might", "may", "must", "has", "had"}
# Lowercase words that may follow the subject itself (not a noun it modifies, as in "the Apollo spacesuit").
_FOLLOWERS = {"is", "was", "are", "were", "has", "have", "had", "and", "or", "that", "which", "who", "when", "where"}
_FOLLOWERS |= {"as", "ever", "first", "still", "also", "not", "be", "become", "became", "begin", "began", "get"}
_FOLLOWERS |= _PREPOSITIONS


def _names_subject(before: list[str], after: str, name: str) -> bool:
    """Whether a subject mention with these words around it is the subject itself, not a modifier or part of a
    longer name ("What Harvard alumni", "the Apollo spacesuit", "the Middle Rhine", "Apollo 11", "southern
    California" for Southern California)."""
    if before and (before[-1].lower() in _MODIFIER_BEFORE or before[-1][0].isupper()):
        return False
    if before and before[-1].lower() in name.lower().split():
        return False
    if after.startswith(("+", "-")) or re.match(r"\s*\d", after):
        return False
    following = re.match(r"\s*([A-Za-z]+)", after)
    if following is None:  # punctuation or the end
        return True
    word = following.group(1)
    if after[0] not in " \t" or word[0].isupper():
        return False
    return word in _FOLLOWERS or word.endswith("ed") or bool(before and before[-1].lower() in _AUXILIARIES)


def follow_up(question: str, forms: list[str], words: dict[str, str]) -> str | None:
    """The question with its first mention of the subject replaced by a pronoun; None when it names none."""
    for form in forms:
        pattern = rf"(?<![\w-])(?:(the)\s+)?{re.escape(form)}(?P<own>'s?)?(?![\w-])"
        for match in re.finditer(pattern, question):
            before = question[: match.start()].split()
            if not _names_subject(before, question[match.end() :], forms[0]):
                continue
            if match.group("own"):
                pronoun = words["possessive"]
            elif before and before[-1].lower() in _PREPOSITIONS:
                pronoun = words["object"]
            else:
                pronoun = words["subject"]
            if not before:
                pronoun = pronoun.capitalize()
            return question[: match.start()] + pronoun + question[match.end() :]
    return None


def build_pairs(seed: int, per_part: int, articles: int) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Follow-up pairs for dev and test (at most `per_part` each, spread over their articles) and the articles
    to index: the pairs' own and seeded distractors, `articles` in all."""
    questions = [json.loads(line) for line in (SQUAD / "questions.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for q in questions:
        by_doc.setdefault(q["doc"], []).append(q)
    candidates: dict[str, list[dict[str, Any]]] = {}
    for doc, asked in sorted(by_doc.items()):
        path = SQUAD / "docs" / doc
        forms, words = subject_forms(title(path)), pronouns(path)
        made = [(q, follow_up(q["question"], forms, words)) for q in asked]
        # The first question names the subject, as a conversation does before a pronoun can refer to it.
        naming = [q for q in asked if any(re.search(rf"\b{re.escape(f)}\b", q["question"], re.I) for f in forms)]
        pairs = []
        for second, text in made:
            firsts = [q for q in naming if q["id"] != second["id"]]
            if text is None or not firsts:
                continue
            first = rng.choice(firsts)
            pairs.append({"doc": doc, "first": first, "second": second, "follow_up": text})
        if pairs:
            rng.shuffle(pairs)
            candidates[doc] = pairs
    docs = sorted(candidates)
    rng.shuffle(docs)
    split = {"dev": sorted(docs[: len(docs) // 2]), "test": sorted(docs[len(docs) // 2 :])}
    parts: dict[str, list[dict[str, Any]]] = {}
    for part, group in split.items():
        # One pair per article in turn, so no one article fills a part.
        turns = [
            p for n in range(max(len(candidates[d]) for d in group)) for d in group for p in candidates[d][n : n + 1]
        ]
        parts[part] = [{**p, "part": part} for p in turns[:per_part]]
    used = sorted({p["doc"] for ps in parts.values() for p in ps})
    others = sorted({p.name for p in (SQUAD / "docs").glob("*.txt")} - set(used))
    rng.shuffle(others)
    return parts, used + sorted(others[: max(articles - len(used), 0)])


def hits(sources: list[Any], doc: str, answers: list[str], k: int) -> tuple[float, float]:
    """(article hit, evidence hit) within the first k sources."""
    top = sources[:k]
    article = any(Path(s.path).name == doc for s in top)
    evidence = any(contains(s.text, answers) > 0 for s in top)
    return float(article), float(evidence)


def measure(
    parts: dict[str, list[dict[str, Any]]], corpus: Path, overrides: list[str], k: int, lm: bool = True
) -> list[dict]:
    """Every pair retrieved four ways (three without `lm`); one row per pair with each way's query and hits, and
    the LM's time."""
    from models.config import load_config
    from models.embedders import build_embedder
    from models.generate import build_generator
    from models.paths import index_dir
    from rag.followup import lm_rewrite, rules_rewrite
    from rag.ingest import ingest
    from rag.retrieve import build_retriever
    from ragtune.compose import quiet_libraries

    quiet_libraries()
    config = load_config(None, overrides)
    embedder = build_embedder(config.embedder)
    started = time.perf_counter()
    summary_line = ingest([corpus], config, embedder, progress=False)
    say(f"index: {summary_line.line()} ({time.perf_counter() - started:.0f} s)")
    retriever = build_retriever(index_dir(config), config, embedder)
    generator = build_generator(config.llm, progress=False) if lm else None
    rows = []
    pairs = [p for part in ("test", "dev") for p in parts[part]]  # test first: a stopped run still reports it
    for n, pair in enumerate(pairs, 1):
        first, second = pair["first"], pair["second"]
        conversation = [
            {"role": "user", "content": first["question"]},
            {"role": "assistant", "content": first["answers"][0]},
        ]
        queries = {
            "first question": first["question"],
            "follow-up alone": pair["follow_up"],
            "rules": rules_rewrite(pair["follow_up"], conversation),
        }
        rewriting, lm_s = time.perf_counter(), None
        if generator is not None:
            queries["lm"] = lm_rewrite(pair["follow_up"], conversation, generator, config.rag.followup_max_tokens)
            lm_s = time.perf_counter() - rewriting
        row = {"part": pair["part"], "doc": pair["doc"], "original": second["question"], "lm_s": lm_s, "ways": {}}
        for way, query in queries.items():
            gold = first if way == "first question" else second
            found = retriever.retrieve(query).sources
            article, evidence = hits(found, pair["doc"], gold["answers"], k)
            row["ways"][way] = {"query": query, "article": article, "evidence": evidence}
        rows.append(row)
        if n % 20 == 0 or n == len(pairs):
            say(f"retrieved {n}/{len(pairs)} pairs")
    return rows


def report(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Each part's hit rates per way, with 95% bootstrap intervals, and the LM's time per rewrite."""
    result: dict[str, Any] = {}
    for part in ("dev", "test"):
        chosen = [r for r in rows if r["part"] == part]
        if not chosen:
            continue
        ways = {}
        for way in [w for w in WAYS if w in chosen[0]["ways"]]:
            ways[way] = {
                f"article_hit@{k}": summary([r["ways"][way]["article"] for r in chosen]),
                f"evidence_hit@{k}": summary([r["ways"][way]["evidence"] for r in chosen]),
            }
        times = sorted(r["lm_s"] for r in chosen if r["lm_s"] is not None)
        lm_time = (
            {"mean_s": sum(times) / len(times), "p50_s": times[len(times) // 2], "max_s": times[-1]} if times else None
        )
        result[part] = {"pairs": len(chosen), "ways": ways, "lm_rewrite": lm_time}
    return result


def _cell(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    return f"{stat['mean']:.1%} [{low:.1%}, {high:.1%}]"


def markdown(result: dict[str, Any], k: int) -> str:
    lines = []
    for part, figures in result.items():
        rows = [
            (way, _cell(f[f"article_hit@{k}"]), _cell(f[f"evidence_hit@{k}"])) for way, f in figures["ways"].items()
        ]
        lines.append(f"{part}: {figures['pairs']} pairs")
        lines.append(table(f"query | article hit@{k} (95% CI) | evidence hit@{k} (95% CI)", rows))
        t = figures["lm_rewrite"]
        if t is not None:
            lines.append(
                f"LM rewrite per follow-up: mean {t['mean_s']:.2f} s, median {t['p50_s']:.2f} s, max {t['max_s']:.2f} s"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/followups.json"), help="JSON report (and pairs)")
    parser.add_argument("--per-part", type=int, default=50, help="pairs in dev and in test each")
    parser.add_argument("--articles", type=int, default=40, help="articles indexed: the pairs' own and distractors")
    parser.add_argument("--k", type=int, default=3, help="sources that count as retrieved (rag.top_k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, help="RAGTUNE_HOME to index into and keep (default: a temporary one)")
    parser.add_argument("--no-lm", action="store_true", help="leave out the LM rewriter (quick runs of the rules)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    note = busy_note()
    if note:
        say(note)
    parts, articles = build_pairs(args.seed, args.per_part, args.articles)
    say(f"pairs: dev {len(parts['dev'])}, test {len(parts['test'])}; {len(articles)} articles indexed")
    with tempfile.TemporaryDirectory(prefix="ragtune-followups-") as scratch:
        home = args.home or Path(scratch) / "home"
        corpus = home.parent / f"{home.name}-corpus"  # beside it: an index kept in --home finds it unchanged
        corpus.mkdir(parents=True, exist_ok=True)
        for name in articles:
            if not (corpus / name).exists():
                shutil.copyfile(SQUAD / "docs" / name, corpus / name)
        os.environ["RAGTUNE_HOME"] = str(home)
        rows = measure(parts, corpus, [f"rag.top_k={args.k}", *args.set], args.k, lm=not args.no_lm)
    result = report(rows, args.k)
    say(markdown(result, args.k))
    say(f"load average (1, 5, 15 min): {loadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": {**vars(args), "out": str(args.out)}, "load": loadavg(), "result": result, "rows": rows}
    args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    say(f"wrote {args.out}")
    return 0

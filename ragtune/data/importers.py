"""Turn public QA datasets (SQuAD-shaped JSON, PubMedQA) into a docs folder, questions.jsonl and train.jsonl."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from models.errors import InputError
from models.storage import publish_dir, sha256_file, staged_dir
from models.text import show

PUBMEDQA_CHOICES = ("yes", "no", "maybe")
# Appended to every PubMedQA training prompt; evaluation prompts should end with the same line.
PUBMEDQA_INSTRUCTION = "Answer with one word: yes, no or maybe."
# Copied from ../shared/datasets/README.md (the attribution the dataset's licence asks us to keep).
PUBMEDQA_ATTRIBUTION = """\
- Source: the `pubmedqa/pubmedqa` repository on GitHub, commit
  `1cbae8e92f72f20c8d3747cbb3bf5bc53554d997`, files `data/ori_pqal.json` and
  `data/test_ground_truth.json`, unchanged.
- Licence: MIT (`pubmedqa/LICENSE`, copied from that repository). Cite: Jin, Dhingra, Liu, Cohen,
  Lu, "PubMedQA: A Dataset for Biomedical Research Question Answering", EMNLP-IJCNLP 2019.
"""
_PMID = re.compile(r"[0-9]+")


class ImportDataError(InputError):
    """A dataset file is malformed or the output folder is unusable; the message names the bad element."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ImportDataError(f"{path}: not found; pass the path of the dataset's JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportDataError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ImportDataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise ImportDataError(f"{path}: {where}: should be a JSON object, got {show(obj)}")
    if key not in obj:
        raise ImportDataError(f"{path}: {where}: missing {key}; add it or remove that element")
    value = obj[key]
    empty = isinstance(value, str) and not value.strip() or isinstance(value, list) and not value
    if not isinstance(value, kind) or isinstance(value, bool) or empty:
        kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ImportDataError(f"{path}: {where}.{key}: should be a non-empty {kinds}, got {show(value)}")
    return value


def _check_out_dir(out_dir: Path) -> None:
    # Refusing a used folder keeps an import from mixing with an older one's files.
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ImportDataError(f"{out_dir}: already exists and is not an empty folder; pick a new output folder")


def _publish(out_dir: Path, files: dict[str, str]) -> None:
    """Write every file into a staging folder, then rename it to out_dir: readers see all of it or nothing."""
    try:
        with staged_dir(out_dir.parent, out_dir.name) as staging:
            for name, text in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_text(text, encoding="utf-8")
            publish_dir(staging, out_dir)
    except OSError as exc:
        raise ImportDataError(f"{out_dir}: cannot be written ({exc}); pick an empty, writable output folder") from None


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].strip("-")


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate


def _article_name(article: dict[str, Any], index: int, used: set[str]) -> str:
    # Many SQuAD-shaped sets have no titles; document_id, then the position, name those articles.
    for key in ("title", "document_id"):
        value = article.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and _slug(str(value)):
            return _unique(_slug(str(value)), used)
    return _unique(f"article-{index}", used)


def _answers(qa: dict[str, Any], where: str, path: Path) -> list[str]:
    """Distinct answer texts in order; empty when the question is unanswerable."""
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise ImportDataError(f"{path}: {where}.is_impossible: should be true or false, got {show(impossible)}")
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise ImportDataError(f"{path}: {where}.answers: should be a list, got {show(answers)}")
    texts = [_field(answer, "text", str, f"{where}.answers[{i}]", path).strip() for i, answer in enumerate(answers)]
    return [] if impossible else [text for text in dict.fromkeys(texts) if text]


def import_squad(json_path: str | Path, out_dir: str | Path) -> dict[str, int]:
    """SQuAD v1/v2-shaped JSON -> out_dir/docs/<article>.txt and out_dir/questions.jsonl; returns counts."""
    path, out_dir = Path(json_path), Path(out_dir)
    _check_out_dir(out_dir)
    articles = _field(_load_json(path), "data", list, "top level", path)
    files: dict[str, str] = {}
    questions: list[dict[str, Any]] = []
    used_names: set[str] = set()
    seen_ids: dict[str, str] = {}
    unanswerable = 0
    for a, article in enumerate(articles):
        paragraphs = _field(article, "paragraphs", list, f"data[{a}]", path)
        name = _article_name(article, a, used_names) + ".txt"
        contexts = []
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            contexts.append(_field(paragraph, "context", str, where, path).strip())
            qas = paragraph.get("qas", []) if isinstance(paragraph, dict) else []
            if not isinstance(qas, list):
                raise ImportDataError(f"{path}: {where}.qas: should be a list, got {show(qas)}")
            for q, qa in enumerate(qas):
                at = f"{where}.qas[{q}]"
                qid = str(_field(qa, "id", (str, int), at, path))
                text = _field(qa, "question", str, at, path).strip()
                if qid in seen_ids:
                    raise ImportDataError(f"{path}: {at}.id: {show(qid)} is already used at {seen_ids[qid]}")
                seen_ids[qid] = at
                answers = _answers(qa, at, path)
                if not answers:
                    unanswerable += 1
                    continue
                questions.append({"id": qid, "question": text, "answers": answers, "doc": name})
        files[f"docs/{name}"] = "\n\n".join(contexts) + "\n"
    if not questions:
        raise ImportDataError(f"{path}: holds no answerable question; pass a file with answered questions")
    files["questions.jsonl"] = _jsonl(questions)
    _publish(out_dir, files)
    return {"articles": len(articles), "questions": len(questions), "unanswerable": unanswerable}


def _pubmedqa_record(record: Any, pmid: str, path: Path) -> tuple[str, list[str], str, str]:
    where = f"[{show(pmid)}]"
    if not _PMID.fullmatch(pmid):
        raise ImportDataError(f"{path}: {where}: a PubMed id should be digits only (it names a file)")
    question = _field(record, "QUESTION", str, where, path).strip()
    contexts = _field(record, "CONTEXTS", list, where, path)
    for i, paragraph in enumerate(contexts):
        if not isinstance(paragraph, str) or not paragraph.strip():
            raise ImportDataError(f"{path}: {where}.CONTEXTS[{i}]: should be a non-empty string")
    decision = _field(record, "final_decision", str, where, path)
    if decision not in PUBMEDQA_CHOICES:
        raise ImportDataError(f"{path}: {where}.final_decision: {show(decision)} is not one of {PUBMEDQA_CHOICES}")
    long_answer = record.get("LONG_ANSWER")
    long_answer = long_answer.strip() if isinstance(long_answer, str) else ""
    return question, [c.strip() for c in contexts], decision, long_answer


def import_pubmedqa(dataset_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """PubMedQA PQA-L -> docs/<pmid>.txt (CONTEXTS only), questions.jsonl (test ids), train.jsonl (the rest)."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    _check_out_dir(out_dir)
    ori_path, test_path = dataset_dir / "ori_pqal.json", dataset_dir / "test_ground_truth.json"
    records, test = _load_json(ori_path), _load_json(test_path)
    for data, file in ((records, ori_path), (test, test_path)):
        if not isinstance(data, dict) or not data:
            raise ImportDataError(f"{file}: should be a non-empty JSON object keyed by PubMed id")
    files: dict[str, str] = {}
    parsed = {}
    for pmid, record in records.items():
        question, contexts, decision, long_answer = _pubmedqa_record(record, pmid, ori_path)
        doc = "\n\n".join(contexts) + "\n"
        # LONG_ANSWER is the abstract's conclusion and states the label: it must never reach a document.
        if long_answer and long_answer in doc:
            raise ImportDataError(f"{ori_path}: [{show(pmid)}]: CONTEXTS contain the LONG_ANSWER; fix the record")
        files[f"docs/{pmid}.txt"] = doc
        parsed[pmid] = (question, decision)
    for pmid, decision in test.items():
        if pmid not in parsed:
            raise ImportDataError(f"{test_path}: [{show(pmid)}]: not an id of {ori_path.name}; use matching files")
        if decision != parsed[pmid][1]:
            raise ImportDataError(
                f"{test_path}: [{show(pmid)}]: decision {show(decision)} differs from final_decision "
                f"{show(parsed[pmid][1])} in {ori_path.name}; use the two files of one dataset version"
            )
    choices = list(PUBMEDQA_CHOICES)
    questions = [
        {"id": pmid, "question": parsed[pmid][0], "answers": [decision], "doc": f"{pmid}.txt", "choices": choices}
        for pmid, decision in test.items()
    ]
    train = [
        {"id": pmid, "prompt": f"{question}\n{PUBMEDQA_INSTRUCTION}", "completion": decision, "doc": f"{pmid}.txt"}
        for pmid, (question, decision) in parsed.items()
        if pmid not in test
    ]
    files["questions.jsonl"] = _jsonl(questions)
    files["train.jsonl"] = _jsonl(train)
    files["SOURCE.md"] = _pubmedqa_source(dataset_dir, ori_path, test_path)
    _publish(out_dir, files)
    counts = {"docs": len(parsed), "questions": len(questions), "train": len(train)}
    return counts | {f"questions_{c}": sum(d == c for d in test.values()) for c in PUBMEDQA_CHOICES}


def _pubmedqa_source(dataset_dir: Path, ori_path: Path, test_path: Path) -> str:
    licence = dataset_dir / "LICENSE"
    text = (
        "# PubMedQA, expert-labelled part (PQA-L)\n\n"
        f"{PUBMEDQA_ATTRIBUTION}"
        f"- sha256 of the files read: `ori_pqal.json` {sha256_file(ori_path)}, "
        f"`test_ground_truth.json` {sha256_file(test_path)}.\n"
        "- Made by `ragtune.data.importers.import_pubmedqa`: `docs/` holds each id's CONTEXTS only (never "
        "LONG_ANSWER, which states the answer); `questions.jsonl` the test ids of `test_ground_truth.json`; "
        "`train.jsonl` the other ids as question -> decision pairs, each naming its document (`doc`, for RAFT).\n"
    )
    if licence.is_file():
        text += f"\n## Licence (copied from {licence.name})\n\n{licence.read_text(encoding='utf-8').strip()}\n"
    return text

"""Evaluation questions: read and validate a questions JSONL file, and draw a seeded sample of it."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from models.errors import InputError
from models.storage import read_utf8
from models.text import show

FIELDS = ("id", "question", "answers", "doc", "docs", "choices")
SHAPE = '{"id": "q1", "question": "...", "answers": ["..."], "doc": "folder/file.txt", "choices": ["yes", "no"]}'


class QuestionsError(InputError):
    """A questions file or record is unusable; the message names `file:line`, the field and the fix."""


@dataclass(frozen=True)
class Question:
    # Unique within its file; "line-N" when the record has none.
    id: str
    question: str
    # Every accepted answer; scores take the best match over them. Empty: the documents do not answer the
    # question (written `"answers": []`), and the right reply is to say so (a refusal).
    answers: tuple[str, ...]
    # The documents that hold the answer ("gold"), relative to the documents folder (POSIX form); empty when
    # unknown. Written as `doc` (one) or `docs` (several) in the file.
    docs: tuple[str, ...] = ()
    # The closed set of decisions (e.g. yes/no/maybe) when answers are choices; every answer is one of them.
    choices: tuple[str, ...] | None = None

    @property
    def doc(self) -> str | None:
        """The first gold document, or None: what callers that know of one gold document read."""
        return self.docs[0] if self.docs else None


def _read_text(path: Path) -> str:
    return read_utf8(path, QuestionsError, "a questions file")


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuestionsError(f"{where}: {field!r} should be a non-empty string, got {show(value)}")
    return value


def _texts(value: Any, field: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise QuestionsError(f"{where}: {field!r} should be a non-empty list of strings, got {show(value)}")
    return tuple(_text(item, f"{field}[{i}]", where) for i, item in enumerate(value))


def _doc(value: Any, field: str, where: str) -> str:
    doc = _text(value, field, where)
    # Backslashes would be one odd file name on POSIX; absolute or ".." paths would escape the docs folder.
    if "\\" in doc:
        raise QuestionsError(f"{where}: {field!r} {show(doc)} uses backslashes; write the path with forward slashes")
    path = PurePosixPath(doc)
    if path.is_absolute() or ".." in path.parts:
        raise QuestionsError(
            f"{where}: {field!r} {show(doc)} should be relative to the documents folder, without '..'; "
            'write it as e.g. "folder/file.txt"'
        )
    return path.as_posix()


def _gold_docs(item: dict[str, Any], where: str) -> tuple[str, ...]:
    """`doc` (one gold document) or `docs` (a list of them), never both: the answer may be in any of them."""
    one, many = item.get("doc"), item.get("docs")
    if one is not None and many is not None:
        raise QuestionsError(
            f"{where}: both 'doc' and 'docs' are given; keep one: 'doc' for one gold document, "
            "'docs' for a list of them"
        )
    if one is not None:
        return (_doc(one, "doc", where),)
    if many is None:
        return ()
    if not isinstance(many, list) or not many:
        raise QuestionsError(
            f"{where}: 'docs' should be a non-empty list of document paths, got {show(many)}; "
            'write it as e.g. ["a.txt", "folder/b.txt"]'
        )
    docs = tuple(_doc(entry, f"docs[{i}]", where) for i, entry in enumerate(many))
    if len(set(docs)) != len(docs):
        raise QuestionsError(f"{where}: 'docs' {show(many)} names a document twice; list each once")
    return docs


def _question(item: Any, number: int, where: str) -> Question:
    if not isinstance(item, dict):
        raise QuestionsError(f"{where}: each line should be a JSON object like {SHAPE}, got {show(item)}")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise QuestionsError(f"{where}: unknown field(s) {unknown}; a question has only {list(FIELDS)}")
    for field in ("question", "answers"):
        if field not in item:
            raise QuestionsError(f"{where}: missing the {field!r} field; a question looks like {SHAPE}")
    question = _text(item["question"], "question", where)
    if (
        isinstance(item["answers"], list)
        and item["answers"]
        and not any(isinstance(a, str) and a.strip() for a in item["answers"])
    ):
        raise QuestionsError(
            f"{where}: 'answers' holds only empty strings; write the accepted answers, or \"answers\": [] for a "
            "question the documents cannot answer (the right reply is then a refusal)"
        )
    answers = () if item["answers"] == [] else _texts(item["answers"], "answers", where)
    qid = f"line-{number}" if item.get("id") is None else _text(item["id"], "id", where)
    docs = _gold_docs(item, where)
    choices = None
    if item.get("choices") is not None:
        if item["choices"] == []:
            raise QuestionsError(
                f"{where}: 'choices' is an empty list; list the closed set of answers "
                '(e.g. ["yes", "no", "maybe"]) or drop the field for a free-text question'
            )
        choices = _texts(item["choices"], "choices", where)
        if not answers:
            raise QuestionsError(
                f"{where}: 'answers' is empty but 'choices' is given; a closed-set question needs its right "
                "choice in 'answers' (an unanswerable question has no 'choices')"
            )
        if len(set(choices)) != len(choices):
            raise QuestionsError(f"{where}: 'choices' {show(item['choices'])} repeats a choice; list each once")
        for answer in answers:
            if answer not in choices:
                raise QuestionsError(
                    f"{where}: answer {show(answer)} is not one of the choices {list(choices)}; "
                    "spell it exactly as a choice or add it to 'choices'"
                )
    return Question(id=qid, question=question, answers=answers, docs=docs, choices=choices)


def read_questions(path: str | Path) -> list[Question]:
    """Every question in a JSONL file, in file order; blank lines are skipped, any bad record is an error."""
    path = Path(path)
    questions: list[Question] = []
    first_line: dict[str, int] = {}
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines() would break on.
    for number, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionsError(
                f"{where}: not valid JSON ({exc.msg}); each line should hold one complete JSON object"
            ) from None
        question = _question(item, number, where)
        if question.id in first_line:
            raise QuestionsError(
                f"{where}: 'id' {show(question.id)} is already used on line {first_line[question.id]}; "
                "give every question its own id"
            )
        first_line[question.id] = number
        questions.append(question)
    if not questions:
        raise QuestionsError(f"{path}: holds no questions; write one JSON object per line like {SHAPE}")
    return questions


def sample(questions: Sequence[Question], limit: int | None, seed: int) -> list[Question]:
    """`limit` questions drawn with `seed`, kept in their original order; None (or more than there are) = all.

    The draw takes a prefix of one seeded permutation, so a larger limit with the same seed keeps every
    question a smaller one picked: growing an evaluation adds questions without replacing any.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise QuestionsError(f"limit should be a whole number of at least 1 (or unset for all), got {limit!r}")
    if limit is None or limit >= len(questions):
        return list(questions)
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    return [questions[i] for i in sorted(order[:limit])]

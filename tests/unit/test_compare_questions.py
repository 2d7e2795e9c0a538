import json
from pathlib import Path

import pytest

from models.errors import InputError
from ragtune.compare.questions import Question, QuestionsError, read_questions, sample


def write(path: Path, *lines: object) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_reads_every_field_and_defaults(tmp_path: Path):
    path = write(
        tmp_path / "q.jsonl",
        {"question": "Who?", "answers": ["Ada", "Ada Lovelace"]},
        "",
        {"id": "p1", "question": "Does it?", "answers": ["yes"], "doc": "./sub/a.txt", "choices": ["yes", "no"]},
        {"question": "Where?", "answers": ["here"], "doc": None, "id": None},
    )
    first, second, third = read_questions(path)
    assert first == Question(id="line-1", question="Who?", answers=("Ada", "Ada Lovelace"), docs=(), choices=None)
    assert second == Question(
        id="p1", question="Does it?", answers=("yes",), docs=("sub/a.txt",), choices=("yes", "no")
    )
    assert second.doc == "sub/a.txt"
    assert third.id == "line-4" and third.doc is None and third.docs == ()


def test_several_gold_documents(tmp_path: Path):
    path = write(
        tmp_path / "q.jsonl",
        {"question": "Where?", "answers": ["here"], "docs": ["a.txt", "./sub/b.txt"]},
        {"question": "Which?", "answers": ["x"], "docs": None, "doc": "c.txt"},
    )
    several, one = read_questions(path)
    assert several.docs == ("a.txt", "sub/b.txt") and several.doc == "a.txt"
    assert one.docs == ("c.txt",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "should be a JSON object"),
        ({"answers": ["x"]}, "missing the 'question' field"),
        ({"question": "q"}, "missing the 'answers' field"),
        ({"question": "  ", "answers": ["x"]}, "'question' should be a non-empty string"),
        ({"question": "q", "answers": None}, "'answers' should be a non-empty list"),
        ({"question": "q", "answers": "x"}, "'answers' should be a non-empty list"),
        ({"question": "q", "answers": ["x", ""]}, r"'answers\[1\]' should be a non-empty string"),
        ({"question": "q", "answers": [""]}, r"only empty strings; .* \"answers\": \[\] for a question the documents"),
        ({"question": "q", "answers": ["x"], "id": 7}, "'id' should be a non-empty string"),
        ({"question": "q", "answers": ["x"], "doc": "/etc/passwd"}, "relative to the documents folder"),
        ({"question": "q", "answers": ["x"], "doc": "a/../../b.txt"}, "without '..'"),
        ({"question": "q", "answers": ["x"], "doc": "a\\b.txt"}, "forward slashes"),
        ({"question": "q", "answers": ["x"], "choices": []}, "'choices' is an empty list"),
        ({"question": "q", "answers": [], "choices": ["yes", "no"]}, "needs its right choice in 'answers'"),
        ({"question": "q", "answers": ["yes"], "choices": "yes"}, "'choices' should be a non-empty list"),
        ({"question": "q", "answers": ["yes"], "choices": ["yes", "yes"]}, "repeats a choice"),
        ({"question": "q", "answers": ["Yes"], "choices": ["yes", "no"]}, "not one of the choices"),
        ({"question": "q", "answers": ["x"], "answer": "x"}, r"unknown field\(s\) \['answer'\]"),
        ({"question": "q", "answers": ["x"], "doc": "a.txt", "docs": ["b.txt"]}, "both 'doc' and 'docs'"),
        ({"question": "q", "answers": ["x"], "docs": []}, "'docs' should be a non-empty list of document paths"),
        ({"question": "q", "answers": ["x"], "docs": "a.txt"}, "'docs' should be a non-empty list of document paths"),
        ({"question": "q", "answers": ["x"], "docs": ["a.txt", 3]}, r"'docs\[1\]' should be a non-empty string"),
        ({"question": "q", "answers": ["x"], "docs": ["a.txt", "../b.txt"]}, r"'docs\[1\]' .* without '\.\.'"),
        ({"question": "q", "answers": ["x"], "docs": ["a.txt", "./a.txt"]}, "names a document twice"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path: Path, line, message):
    path = write(tmp_path / "q.jsonl", {"question": "fine", "answers": ["ok"]}, line)
    with pytest.raises(QuestionsError, match=message) as caught:
        read_questions(path)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert isinstance(caught.value, InputError)


def test_duplicate_ids_name_both_lines(tmp_path: Path):
    path = write(
        tmp_path / "q.jsonl",
        {"id": "line-3", "question": "a", "answers": ["x"]},
        "",
        {"question": "b", "answers": ["y"]},  # its default id collides with line 1's explicit one
    )
    with pytest.raises(QuestionsError, match=r"q.jsonl:3: 'id' \"line-3\" is already used on line 1"):
        read_questions(path)


def test_empty_missing_and_undecodable_files_are_errors(tmp_path: Path):
    with pytest.raises(QuestionsError, match="holds no questions"):
        read_questions(write(tmp_path / "empty.jsonl", "", "  "))
    with pytest.raises(QuestionsError, match="cannot be read"):
        read_questions(tmp_path / "absent.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9", "answers": ["x"]}\n')
    with pytest.raises(QuestionsError, match="not UTF-8"):
        read_questions(tmp_path / "latin1.jsonl")


def test_a_line_separator_inside_a_string_stays_one_record(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "a\u2028b", "answers": ["x"]}, ensure_ascii=False) + "\n")
    assert read_questions(path)[0].question == "a\u2028b"


def questions(n: int) -> list[Question]:
    return [Question(id=str(i), question=f"q{i}", answers=("a",)) for i in range(n)]


def test_sample_is_seeded_order_stable_and_nested():
    pool = questions(50)
    picked = sample(pool, 10, seed=3)
    assert len(picked) == 10 and picked == sample(pool, 10, seed=3)
    assert [int(q.id) for q in picked] == sorted(int(q.id) for q in picked)
    assert picked != sample(pool, 10, seed=4)
    assert set(picked) <= set(sample(pool, 20, seed=3))  # a larger limit keeps the smaller draw
    assert sample(pool, None, seed=3) == pool and sample(pool, 500, seed=3) == pool


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_sample_rejects_bad_limits(limit):
    with pytest.raises(QuestionsError, match="limit should be"):
        sample(questions(5), limit, seed=0)


def test_empty_answers_mark_a_question_the_documents_do_not_answer(tmp_path: Path):
    path = write(tmp_path / "q.jsonl", {"id": "n1", "question": "Who?", "answers": []})
    assert read_questions(path) == [Question(id="n1", question="Who?", answers=())]


def test_the_shipped_unanswerable_set_reads_as_unanswerable():
    questions = read_questions(Path(__file__).parents[2] / "examples" / "unanswerable.jsonl")
    assert len(questions) >= 8 and all(q.answers == () and q.choices is None for q in questions)

import json
from collections import Counter
from pathlib import Path

import pytest

from models.errors import InputError
from ragtune.compare.questions import read_questions
from ragtune.data.importers import (
    PUBMEDQA_INSTRUCTION,
    ImportDataError,
    import_pubmedqa,
    import_squad,
)

PUBMEDQA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "pubmedqa"


def squad_fixture() -> dict:
    """Two titled articles that slug alike, one untitled with a document_id, one with neither."""
    qa = {"id": "q1", "question": "Who built it? ", "answers": [{"text": "Eiffel", "answer_start": 0}] * 2}
    return {
        "version": "v2.0",
        "data": [
            {
                "title": "Tour Eiffel!",
                "paragraphs": [
                    {"context": "Eiffel built it. ", "qas": [qa]},
                    {
                        "context": "It is in Paris.",
                        "qas": [
                            {"id": "q2", "question": "Where?", "answers": [{"text": "Paris"}, {"text": "in Paris"}]},
                            {"id": "q3", "question": "When?", "answers": [], "is_impossible": True},
                        ],
                    },
                ],
            },
            {"title": "tour eiffel", "paragraphs": [{"context": "Another.", "qas": []}]},
            {"document_id": 42, "paragraphs": [{"context": "Untitled.", "qas": [{"id": 7, "question": "Q?"}]}]},
            {
                "paragraphs": [
                    {"context": "Café text.", "qas": [{"id": "q8", "question": "What?", "answers": [{"text": "Café"}]}]}
                ]
            },
        ],
    }


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_import_squad_writes_docs_and_questions(tmp_path: Path):
    source = write_json(tmp_path / "squad.json", squad_fixture())
    counts = import_squad(source, tmp_path / "out")
    assert counts == {"articles": 4, "questions": 3, "unanswerable": 2}
    docs = tmp_path / "out" / "docs"
    assert sorted(p.name for p in docs.iterdir()) == ["42.txt", "article-3.txt", "tour-eiffel-2.txt", "tour-eiffel.txt"]
    assert (docs / "tour-eiffel.txt").read_text() == "Eiffel built it.\n\nIt is in Paris.\n"
    questions = read_questions(tmp_path / "out" / "questions.jsonl")
    assert [(q.id, q.question, q.answers, q.doc) for q in questions] == [
        ("q1", "Who built it?", ("Eiffel",), "tour-eiffel.txt"),
        ("q2", "Where?", ("Paris", "in Paris"), "tour-eiffel.txt"),
        ("q8", "What?", ("Café",), "article-3.txt"),
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_import_squad_refuses_a_used_out_dir(tmp_path: Path):
    source = write_json(tmp_path / "squad.json", squad_fixture())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    with pytest.raises(ImportDataError, match="not an empty folder"):
        import_squad(source, tmp_path / "out")
    assert import_squad(source, tmp_path / "empty")["questions"] == 3
    (tmp_path / "again").mkdir()
    assert import_squad(source, tmp_path / "again")["questions"] == 3  # an empty folder is fine


def broken(path: str, value: object) -> dict:
    """The fixture with one element replaced; `path` is a list of keys and indices."""
    data = squad_fixture()
    *parents, last = json.loads(path)
    target = data
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ('["data"]', KeyError, "top level: missing data"),
        ('["data", 1, "paragraphs"]', [], r"data\[1\].paragraphs: should be a non-empty list"),
        ('["data", 0, "paragraphs", 1]', "text", r"data\[0\].paragraphs\[1\]: should be a JSON object"),
        ('["data", 0, "paragraphs", 1, "context"]', " ", r"data\[0\].paragraphs\[1\].context: should be a non-empty"),
        ('["data", 0, "paragraphs", 1, "qas"]', {}, r"data\[0\].paragraphs\[1\].qas: should be a list"),
        ('["data", 0, "paragraphs", 1, "qas", 0, "question"]', KeyError, r"paragraphs\[1\].qas\[0\]: missing question"),
        ('["data", 0, "paragraphs", 1, "qas", 0, "id"]', "q1", r"qas\[0\].id: \"q1\" is already used at data\[0\]"),
        ('["data", 0, "paragraphs", 1, "qas", 0, "answers"]', [{"txt": "x"}], r"qas\[0\].answers\[0\]: missing text"),
        ('["data", 0, "paragraphs", 1, "qas", 1, "is_impossible"]', "yes", r"qas\[1\].is_impossible: should be true"),
    ],
)
def test_import_squad_names_the_bad_element(tmp_path: Path, where, value, message):
    source = write_json(tmp_path / "squad.json", broken(where, value))
    with pytest.raises(ImportDataError, match=message) as caught:
        import_squad(source, tmp_path / "out")
    assert str(caught.value).startswith(f"{source}: ") and isinstance(caught.value, InputError)
    assert not (tmp_path / "out").exists()


def test_import_squad_rejects_unreadable_and_unanswerable_files(tmp_path: Path):
    (tmp_path / "bad.json").write_text('{"data": [}')
    with pytest.raises(ImportDataError, match=r"bad.json:1: not valid JSON"):
        import_squad(tmp_path / "bad.json", tmp_path / "out")
    with pytest.raises(ImportDataError, match="not found"):
        import_squad(tmp_path / "absent.json", tmp_path / "out")
    none = {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q", "answers": []}]}]}]}
    with pytest.raises(ImportDataError, match="no answerable question"):
        import_squad(write_json(tmp_path / "none.json", none), tmp_path / "out")


LEAK = "CONCLUSION-MARKER the answer is plainly yes"


def pubmedqa_fixture(root: Path, records: dict | None = None, test: dict | None = None) -> Path:
    records = records or {
        str(pmid): {
            "QUESTION": f"Does thing {pmid} work?",
            "CONTEXTS": [f"Background {pmid}.", f"Results {pmid}."],
            "LONG_ANSWER": f"{LEAK} {pmid}",
            "final_decision": decision,
        }
        for pmid, decision in zip(range(100, 106), ["yes", "no", "maybe", "yes", "no", "yes"])
    }
    root.mkdir()
    write_json(root / "ori_pqal.json", records)
    write_json(root / "test_ground_truth.json", test or {"100": "yes", "101": "no", "102": "maybe"})
    (root / "LICENSE").write_text("MIT License\n\nCopyright (c) 2019 pubmedqa\n")
    return root


def outputs(out: Path) -> list[str]:
    """Every text an import produced that a model could see: documents, questions, training lines."""
    texts = [p.read_text() for p in sorted((out / "docs").iterdir())]
    return texts + [(out / name).read_text() for name in ("questions.jsonl", "train.jsonl")]


def test_import_pubmedqa_splits_and_never_leaks_long_answer(tmp_path: Path):
    counts = import_pubmedqa(pubmedqa_fixture(tmp_path / "pq"), tmp_path / "out")
    assert counts == {
        "docs": 6,
        "questions": 3,
        "train": 3,
        "questions_yes": 1,
        "questions_no": 1,
        "questions_maybe": 1,
    }
    out = tmp_path / "out"
    assert (out / "docs" / "101.txt").read_text() == "Background 101.\n\nResults 101.\n"
    assert not any("CONCLUSION-MARKER" in text for text in outputs(out))
    questions = read_questions(out / "questions.jsonl")
    assert [(q.id, q.answers, q.doc, q.choices) for q in questions][2] == (
        "102",
        ("maybe",),
        "102.txt",
        ("yes", "no", "maybe"),
    )
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    prompt = f"Does thing 103 work?\n{PUBMEDQA_INSTRUCTION}"
    assert train[0] == {"id": "103", "prompt": prompt, "completion": "yes", "doc": "103.txt"}  # doc: for RAFT
    source = (out / "SOURCE.md").read_text()
    assert "MIT" in source and "EMNLP-IJCNLP 2019" in source and "Copyright (c) 2019 pubmedqa" in source


def test_import_pubmedqa_rejects_inconsistent_files(tmp_path: Path):
    with pytest.raises(ImportDataError, match="not an id of ori_pqal.json"):
        import_pubmedqa(pubmedqa_fixture(tmp_path / "a", test={"999": "yes"}), tmp_path / "out")
    with pytest.raises(ImportDataError, match="differs from final_decision"):
        import_pubmedqa(pubmedqa_fixture(tmp_path / "b", test={"100": "no"}), tmp_path / "out")
    bad = {"100": {"QUESTION": "q", "CONTEXTS": ["c"], "final_decision": "perhaps"}}
    with pytest.raises(ImportDataError, match=r"\[\"100\"\].final_decision"):
        import_pubmedqa(pubmedqa_fixture(tmp_path / "c", records=bad, test={"100": "yes"}), tmp_path / "out")
    leaky = {"100": {"QUESTION": "q", "CONTEXTS": ["c. So yes."], "LONG_ANSWER": "So yes.", "final_decision": "yes"}}
    with pytest.raises(ImportDataError, match="contain the LONG_ANSWER"):
        import_pubmedqa(pubmedqa_fixture(tmp_path / "d", records=leaky, test={"100": "yes"}), tmp_path / "out")
    unsafe = {"../x": {"QUESTION": "q", "CONTEXTS": ["c"], "final_decision": "yes"}}
    with pytest.raises(ImportDataError, match="digits only"):
        import_pubmedqa(pubmedqa_fixture(tmp_path / "e", records=unsafe, test={"../x": "yes"}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (PUBMEDQA / "ori_pqal.json").is_file(), reason=f"PubMedQA is not at {PUBMEDQA}")
def test_import_pubmedqa_on_the_real_data(tmp_path: Path):
    out = tmp_path / "out"
    counts = import_pubmedqa(PUBMEDQA, out)
    assert counts == {
        "docs": 1000,
        "questions": 500,
        "train": 500,
        "questions_yes": 276,
        "questions_no": 169,
        "questions_maybe": 55,
    }
    assert len(list((out / "docs").iterdir())) == 1000
    questions = read_questions(out / "questions.jsonl")
    assert Counter(q.answers[0] for q in questions) == {"yes": 276, "no": 169, "maybe": 55}
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(train) == 500
    test_ids, train_ids = {q.id for q in questions}, {t["id"] for t in train}
    assert not test_ids & train_ids and len(test_ids | train_ids) == 1000
    assert test_ids == set(json.loads((PUBMEDQA / "test_ground_truth.json").read_text()))
    records = json.loads((PUBMEDQA / "ori_pqal.json").read_text())
    produced = "\n".join(outputs(out))
    leaked = [pmid for pmid, record in records.items() if record["LONG_ANSWER"].strip() in produced]
    assert leaked == []
    source = (out / "SOURCE.md").read_text()
    # The README's sha256 of the files: the import read the unchanged dataset and says so.
    assert "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d" in source
    assert "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51" in source

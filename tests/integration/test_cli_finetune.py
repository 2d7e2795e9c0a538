"""The fine-tuning commands end to end on a tiny LM: synth -> raft -> train -> adapters -> ask."""

import json
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.data.corpus import document_chunks


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def tiny(tiny_lm_path: Path) -> list[str]:
    settings = [
        f"llm.model={tiny_lm_path}",
        "llm.dtype=float32",
        "llm.max_new_tokens=8",
        "finetune.max_steps=2",
        "finetune.batch_size=2",
        "finetune.eval_fraction=0",
        "finetune.max_seq_len=2000",
    ]
    return [arg for setting in settings for arg in ("--set", setting)]


def test_synth_raft_train_adapters_and_ask(
    docs: Path, tmp_path: Path, tiny: list[str], tiny_config, embedder, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run(capsys, "data", "synth", str(docs), "-o", str(tmp_path / "synth.jsonl"), "--limit", "2", *tiny)
    assert code == 0 and "from 2 chunks" in out

    # The tiny random LM writes no grounded pairs, so RAFT gets pairs written by hand for real chunks.
    chunks = document_chunks([docs], tiny_config, embedder)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": f"What does chunk {i} say?", "completion": c.text[:30], "chunk": c.id}) + "\n"
            for i, c in enumerate(chunks[:6])
        )
    )
    raft = tmp_path / "raft.jsonl"
    code, out, _ = run(
        capsys,
        "data",
        "raft",
        str(pairs),
        "--docs",
        str(docs),
        "-o",
        str(raft),
        "--set",
        "finetune.raft_oracle_fraction=0.5",
        "--set",
        "finetune.raft_distractors=2",
        *tiny,
    )
    assert code == 0 and "6 RAFT examples" in out
    records = [json.loads(line) for line in raft.read_text().splitlines()]
    for record in records:
        user = record["messages"][1]["content"]
        assert user.count("<document ") == 2 + record["oracle"]
        assert record["messages"][-1]["role"] == "assistant"
        oracle_text = next(c.text for c in chunks if c.id == record["chunk"])
        assert (oracle_text[:40] in user) == record["oracle"]

    code, out, err = run(capsys, "train", "--data", str(raft), "--name", "raft-v1", *tiny)
    assert code == 0, err
    assert "trained raft-v1: 2 steps" in out
    code, out, _ = run(capsys, "adapters", "list", *tiny)
    assert code == 0 and out.startswith("raft-v1")
    code, out, _ = run(capsys, "adapters", "show", "raft-v1", *tiny)
    assert json.loads(out)["data"]["format"] == "chat"
    code, out, _ = run(
        capsys,
        "ask",
        "--json",
        "--set",
        "mode=finetune",
        "--set",
        "finetune.adapter=raft-v1",
        "When does the library open?",
        *tiny,
    )
    assert code == 0 and json.loads(out)["mode"] == "finetune" and json.loads(out)["sources"] == []

    export = tmp_path / "merged"
    code, out, _ = run(capsys, "adapters", "export", "raft-v1", "--merge", "-o", str(export), *tiny)
    assert code == 0 and (export / "model.safetensors").is_file() and (export / "tokenizer.json").is_file()
    code, _, err = run(capsys, "adapters", "export", "raft-v1", "--merge", "-o", str(export), *tiny)
    assert code == 2 and "exists and is not empty" in err
    code, out, _ = run(capsys, "adapters", "rm", "raft-v1", *tiny)
    assert code == 0 and "removed" in out
    code, _, err = run(capsys, "adapters", "show", "raft-v1", *tiny)
    assert code == 2 and "no adapter named 'raft-v1'" in err


def test_bad_training_and_pair_files_name_the_line(
    tmp_path: Path, docs: Path, tiny: list[str], capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q"}\n')
    code, _, err = run(capsys, "train", "--data", str(bad), "--name", "x", *tiny)
    assert code == 2 and "bad.jsonl:2" in err
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "missing.jsonl"), "--name", "x", *tiny)
    assert code == 2 and "no such training file" in err
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "q", "completion": "a", "chunk": "elsewhere#0"}\n')
    code, _, err = run(capsys, "data", "raft", str(pairs), "--docs", str(docs), "-o", str(tmp_path / "r.jsonl"), *tiny)
    assert code == 2 and "pairs.jsonl:1: chunk 'elsewhere#0' is not among the documents" in err
    code, _, err = run(capsys, "train", "--data", str(bad), "--name", "../escape", *tiny)
    assert code == 2 and "should be a plain name" in err


def test_data_import_squad_writes_docs_and_questions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    squad = {
        "data": [
            {
                "title": "Library",
                "paragraphs": [
                    {
                        "context": "Cards cost 45 dollars.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "What do cards cost?",
                                "answers": [{"text": "45 dollars", "answer_start": 11}],
                            },
                            {"id": "b", "question": "Who?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ]
    }
    source = tmp_path / "squad.json"
    source.write_text(json.dumps(squad))
    code, out, _ = run(capsys, "data", "import-squad", str(source), "-o", str(tmp_path / "out"))
    assert code == 0 and "questions 1" in out and "unanswerable 1" in out
    question = json.loads((tmp_path / "out" / "questions.jsonl").read_text().splitlines()[0])
    assert question["answers"] == ["45 dollars"] and (tmp_path / "out" / "docs" / question["doc"]).is_file()
    code, _, err = run(capsys, "data", "import-squad", str(tmp_path / "missing.json"), "-o", str(tmp_path / "o2"))
    assert code == 2 and "missing.json" in err

"""RAFT examples from pairs that name their document (as the dataset importers write them)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from finetune.data import DataError
from ragtune.data.corpus import document_chunks
from ragtune.data.raft import build_raft


def write_pairs(path: Path, *pairs: dict) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def test_a_pair_naming_its_document_gets_the_chunk_closest_to_its_question(docs, tiny_config, embedder, tmp_path):
    chunks = document_chunks([docs], tiny_config, embedder)
    borrowing = [c for c in chunks if c.source.endswith("borrowing-rules.txt")]
    assert len(borrowing) > 1  # a real choice between chunks of one document
    pairs = write_pairs(
        tmp_path / "pairs.jsonl",
        {
            "prompt": "How many days may a member keep a borrowed DVD?",
            "completion": "7 days",
            "doc": "borrowing-rules.txt",
        },
        {
            "prompt": "What happens when a lost item turns up again?",
            "completion": "refund",
            "doc": "borrowing-rules.txt",
        },
    )
    out = tmp_path / "raft.jsonl"
    ft = replace(tiny_config.finetune, raft_oracle_fraction=1.0, raft_distractors=1)
    summary = build_raft(pairs, chunks, out, ft, docs_root=docs, embedder=embedder)
    assert summary.examples == 2 and summary.with_oracle == 2
    dvd, lost = (json.loads(line) for line in out.read_text().splitlines())
    by_id = {c.id: c for c in chunks}
    assert "DVDs and video games can be borrowed for 7 days" in by_id[dvd["chunk"]].text
    assert "returned within six months" in " ".join(by_id[lost["chunk"]].text.split())
    assert dvd["chunk"] != lost["chunk"]  # the closest chunk per question, not the document's first
    assert by_id[dvd["chunk"]].text[:60] in dvd["messages"][1]["content"]


def test_a_pair_naming_an_unknown_document_is_refused_with_its_line(docs, tiny_config, embedder, tmp_path):
    chunks = document_chunks([docs], tiny_config, embedder)
    pairs = write_pairs(
        tmp_path / "pairs.jsonl",
        {"prompt": "Q?", "completion": "A", "doc": "library-cards.md"},
        {"prompt": "Q?", "completion": "A", "doc": "no-such-file.txt"},
    )
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: doc 'no-such-file\.txt' is not a readable document"):
        build_raft(pairs, chunks, tmp_path / "raft.jsonl", tiny_config.finetune, docs_root=docs, embedder=embedder)
    assert not (tmp_path / "raft.jsonl").exists()


def test_pair_errors_name_the_file_line_even_after_blank_lines(docs, tiny_config, embedder, tmp_path):
    chunks = document_chunks([docs], tiny_config, embedder)
    pairs = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "Q?", "completion": "A", "doc": "library-cards.md"})
    pairs.write_text(f"\n{good}\n\n{json.dumps({'prompt': 'Q?', 'completion': 'A', 'doc': 'gone.txt'})}\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl:4: doc 'gone\.txt'"):
        build_raft(pairs, chunks, tmp_path / "raft.jsonl", tiny_config.finetune, docs_root=docs, embedder=embedder)
    pairs.write_bytes(b'{"prompt": "caf\xe9"}\n')  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"pairs\.jsonl"):
        build_raft(pairs, chunks, tmp_path / "raft.jsonl", tiny_config.finetune, docs_root=docs, embedder=embedder)

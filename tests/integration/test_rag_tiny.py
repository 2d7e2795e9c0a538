"""Ingest and answer end to end with the real packaged embedder and a tiny LM built in code."""

import json
import shutil
from pathlib import Path

import pytest

from models.answer import answer as answer_with
from models.errors import IndexMissingError, InputError
from models.loading import embedder_folder
from models.paths import index_dir
from rag.collection import current_generation, expectation, open_snapshot
from rag.ingest import ingest, remove_documents
from rag.prompt import NOT_FOUND
from ragtune.cli import main
from ragtune.compose import build_answerer


def test_ingest_indexes_every_format_and_summarises(docs: Path, tiny_config, embedder) -> None:
    summary = ingest([docs], tiny_config, embedder)
    names = sorted(Path(p).name for p in summary.added)
    assert names == sorted(p.name for p in docs.iterdir())
    assert summary.skipped == [] and summary.chunks == summary.total_chunks > len(names)
    snapshot = open_snapshot(index_dir(tiny_config), expectation(tiny_config, embedder.dim))
    assert snapshot.index.count == snapshot.store.chunk_count() == summary.total_chunks
    assert snapshot.manifest["embedder"] == "minilm-l6" and snapshot.manifest["dim"] == 384
    assert (snapshot.folder / "config.yaml").is_file()


def test_reingest_touches_only_changes(docs: Path, tiny_config, embedder) -> None:
    first = ingest([docs], tiny_config, embedder)
    again = ingest([docs], tiny_config, embedder)
    assert again.unchanged == len(first.added) and again.chunks == 0 and again.generation is None
    before = open_snapshot(index_dir(tiny_config), expectation(tiny_config, embedder.dim))
    chunks_before = {Path(d.path).name: d.chunks for d in before.store.documents()}
    assert before.index.deleted == 0
    with open(docs / "borrowing-rules.txt", "a") as handle:
        handle.write("\nGift cards can be bought at the front desk.\n")
    (docs / "events.jsonl").unlink()
    (docs / "new.md").write_text("The library has a seed library for gardeners.")
    third = ingest([docs], tiny_config, embedder)
    assert [Path(p).name for p in third.updated] == ["borrowing-rules.txt"]
    assert [Path(p).name for p in third.removed] == ["events.jsonl"]
    assert [Path(p).name for p in third.added] == ["new.md"]
    snapshot = open_snapshot(index_dir(tiny_config), expectation(tiny_config, embedder.dim))
    paths = {Path(d.path).name for d in snapshot.store.documents()}
    assert "events.jsonl" not in paths and "new.md" in paths
    assert snapshot.index.count == snapshot.store.chunk_count() == third.total_chunks
    # The changed file's old chunks and the removed file's chunks are marked deleted in place.
    assert snapshot.index.deleted == chunks_before["borrowing-rules.txt"] + chunks_before["events.jsonl"]


def test_bad_files_are_reported_by_name_and_good_ones_indexed(tmp_path: Path, tiny_config, embedder) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("Parking is free on weekends.")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02")
    (folder / "empty.md").write_text("")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 nope")
    summary = ingest([folder], tiny_config, embedder)
    assert [Path(p).name for p in summary.added] == ["good.txt"]
    reasons = {Path(p).name: why for p, why in summary.skipped}
    assert set(reasons) == {"binary.txt", "empty.md", "broken.pdf"}
    assert "binary" in reasons["binary.txt"] and "no text" in reasons["empty.md"]


def test_answer_cites_retrieved_sources_and_records_timings(docs: Path, tiny_config, embedder) -> None:
    ingest([docs], tiny_config, embedder)
    pipeline = build_answerer(tiny_config, embedder=embedder)
    answer = answer_with(pipeline, "How much does a non-resident library card cost?")
    assert answer.sources and Path(answer.sources[0].path).name == "library-cards.md"
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert answer.sources[0].score >= answer.sources[-1].score >= tiny_config.rag.min_score
    assert {"embed_s", "search_s", "total_s", "generate_s"} <= set(answer.timings)
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    assert answer.generation == current_generation(index_dir(tiny_config))


def test_nothing_relevant_means_a_refusal_without_generation(docs: Path, tiny_config, embedder) -> None:
    from dataclasses import replace

    ingest([docs], tiny_config, embedder)
    strict = replace(tiny_config, rag=replace(tiny_config.rag, min_score=0.99))
    answer = answer_with(build_answerer(strict, embedder=embedder), "What is the airspeed of a swallow?")
    assert answer.text == NOT_FOUND and answer.refused and answer.sources == [] and answer.usage is None


def test_no_index_is_a_clear_error(tiny_config, embedder) -> None:
    with pytest.raises(IndexMissingError, match="ragtune ingest"):
        build_answerer(tiny_config, embedder=embedder)


def test_pipeline_picks_up_a_new_generation_without_restart(docs: Path, tiny_config, embedder) -> None:
    ingest([docs], tiny_config, embedder)
    pipeline = build_answerer(tiny_config, embedder=embedder)
    before = answer_with(pipeline, "parking").generation
    (docs / "parking.txt").write_text("Parking at the Central Library is free for two hours.")
    ingest([docs], tiny_config, embedder)
    answer = answer_with(pipeline, "Is parking free at the Central Library?")
    assert answer.generation != before
    assert Path(answer.sources[0].path).name == "parking.txt"


def test_docs_rm_removes_and_rejects_unknown_paths(docs: Path, tiny_config, embedder) -> None:
    ingest([docs], tiny_config, embedder)
    removed = remove_documents([str(docs / "events.jsonl")], tiny_config, embedder.dim)
    assert [Path(p).name for p in removed] == ["events.jsonl"]
    with pytest.raises(InputError, match="not in the index: ../../etc/passwd"):
        remove_documents(["../../etc/passwd"], tiny_config, embedder.dim)


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_ingest_ask_json_and_docs(docs: Path, tiny_lm_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny = ["--set", f"llm.model={tiny_lm_path}", "--set", "llm.max_new_tokens=4"]
    code, out, _ = run_cli(capsys, "ingest", str(docs), *tiny)
    assert code == 0 and "added 6" in out
    code, out, _ = run_cli(capsys, "ask", "--json", "When is the Eastside Branch closed?", *tiny)
    data = json.loads(out)
    assert code == 0 and data["mode"] == "rag" and data["question"].startswith("When is")
    assert data["backend"] == "transformers"  # auto: a Hugging Face folder runs on transformers
    assert Path(data["sources"][0]["path"]).name == "hours-and-branches.html"
    assert {"path", "chunk", "score", "locator", "text", "number"} <= set(data["sources"][0])
    assert {"embed_s", "search_s", "total_s"} <= set(data["timings"])
    code, out, _ = run_cli(capsys, "ask", "How long can I borrow a DVD?", *tiny)
    assert code == 0 and "Sources:" in out and "borrowing-rules.txt" in out
    code, out, _ = run_cli(capsys, "docs", "list", *tiny)
    assert code == 0 and "6 documents" in out
    code, out, _ = run_cli(capsys, "docs", "rm", str(docs / "events.jsonl"), *tiny)
    assert code == 0 and "removed" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ask", "q", "--set", "rag.top_k=zero"], "rag.top_k (--set rag.top_k=zero): should be int"),
        (["ask", "q", "--set", "mode=finetune"], "mode=finetune needs finetune.adapter=NAME"),
        (["ask", "q", "--set", "mode=hybrid", "--set", "finetune.adapter=nope"], "no adapter named 'nope'"),
        (["ask", "q"], "no documents indexed in"),
        (["ingest", "/no/such/folder"], "/no/such/folder: no such file or folder"),
        (["ask", "q", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("ragtune: error: ") and message in err and err.count("\n") == 1


def test_index_built_with_another_embedder_is_refused(docs: Path, tiny_config, embedder, tmp_path: Path) -> None:
    from dataclasses import replace

    from models.errors import ConfigError

    ingest([docs], tiny_config, embedder)
    other = tmp_path / "other-embedder"
    shutil.copytree(embedder_folder("minilm-l6"), other)
    changed = replace(tiny_config, embedder=replace(tiny_config.embedder, model=str(other)))
    with pytest.raises(ConfigError, match="was built with embedder 'minilm-l6'.*--rebuild"):
        open_snapshot(index_dir(changed), expectation(changed, embedder.dim))


def test_long_documents_are_chunked_to_their_last_sentence(tmp_path: Path, tiny_config, embedder) -> None:
    """The embedder's own tokenizer truncates at its maximum length; chunking must see the whole text."""
    folder = tmp_path / "long"
    folder.mkdir()
    filler = " ".join(f"Shelf {i} of the reading room holds atlases and maps of region {i}." for i in range(80))
    (folder / "long.txt").write_text(filler + " The rare book vault opens only on Thursdays at noon.")
    assert len(embedder.token_offsets(filler)) > 4 * embedder.max_tokens
    summary = ingest([folder], tiny_config, embedder)
    snapshot = open_snapshot(index_dir(tiny_config), expectation(tiny_config, embedder.dim))
    texts = [c.text for c in snapshot.store.chunks(snapshot.store.live_ids()).values()]
    assert summary.total_chunks == len(texts) > 10
    assert any("rare book vault opens only on Thursdays" in t for t in texts)
    assert max(len(embedder.token_offsets(t)) for t in texts) <= tiny_config.rag.chunk_tokens
    answer = answer_with(build_answerer(tiny_config, embedder=embedder), "When does the rare book vault open?")
    assert "Thursdays" in answer.sources[0].text

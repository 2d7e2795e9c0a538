"""`ragtune eval --retrieval-only --embedders`: each embedder on its own index, every setting, paired rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ragtune.cli import main
from tests.conftest import EXAMPLES

QUESTIONS = EXAMPLES / "questions.jsonl"
# Chunks the tiny embedders take whole (64 tokens), for every embedder alike; no LM may load.
SETTINGS = ["rag.chunk_tokens=48", "rag.chunk_overlap=8", "llm.model=/no-such-model"]
PAIRED_METRICS = ("evidence_hit@5", "evidence_hit@1", "mrr")


@pytest.fixture(scope="module")
def tiny_embedders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.tiny import build_tiny_embedder

    folders = []
    for seed in (1, 2):
        folder = tmp_path_factory.mktemp(f"tiny-embedder-{seed}")
        build_tiny_embedder(folder, seed)
        folders.append(folder / "model")
    return folders[0], folders[1]


@pytest.fixture(autouse=True)
def no_lm(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.generate
    import ragtune.compose

    def refuse(*args, **kwargs):
        raise AssertionError("retrieval-only loaded the LM")

    monkeypatch.setattr(models.generate, "load_language_model", refuse)
    monkeypatch.setattr(ragtune.compose, "build_generator", refuse)


def run(capsys: pytest.CaptureFixture, *argv: str, sets: list[str] = SETTINGS) -> tuple[int, str, str]:
    code = main([*argv, *(arg for value in sets for arg in ("--set", value))])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def eval_args(docs: Path, *embedders: Path | str) -> list[str]:
    return ["eval", "--retrieval-only", "--questions", str(QUESTIONS), "--docs", str(docs),
            "--embedders", *map(str, embedders)]  # fmt: skip


def test_every_embedder_gets_an_index_and_every_setting_is_paired(
    docs: Path, tmp_path: Path, ragtune_home: Path, tiny_embedders: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    code, printed, err = run(capsys, *eval_args(docs, *tiny_embedders), "-o", str(out), "--json")
    assert code == 0, err
    results = json.loads(printed)
    assert results == json.loads((out / "results.json").read_text())
    names = list(results["embedders"])
    assert names == ["minilm-l6", *map(str, tiny_embedders)] and results["reference_embedder"] == "minilm-l6"
    indexes = [results["embedders"][name]["index"] for name in names]
    assert indexes[0] == "default" and all(i.startswith("default--model-") for i in indexes[1:])
    assert len(set(indexes)) == 3
    for name, index in zip(names, indexes):
        entry = results["embedders"][name]
        assert entry["ingest"] == "built" and entry["ingest_seconds"] > 0
        assert (ragtune_home / "indexes" / index / "CURRENT").is_file()
        assert f"embedder {name}: built index {index} from {docs}" in err
        assert entry["settings"].keys() == results["settings"].keys()
        assert entry["scored_questions"] == 6 and entry["winner"] is not None
    manifest = json.loads(next((ragtune_home / "indexes" / indexes[1]).glob("gen-*/manifest.json")).read_text())
    assert manifest["embedder"] == str(tiny_embedders[0])
    # The reference's figures stay where readers of a single-embedder run find them.
    reference = results["embedders"]["minilm-l6"]
    for key in ("settings", "winner", "differences", "metric", "questions", "scored_questions", "depth"):
        assert results[key] == reference[key]
    assert results["index"] == "default"

    labels = list(results["settings"])
    paired = results["paired"]
    assert [(row["setting"], row["embedder"]) for row in paired] == [
        (label, str(folder)) for label in labels for folder in tiny_embedders
    ]
    for row in paired:
        assert row["reference"] == "minilm-l6"
        if results["settings"][row["setting"]]["status"] == "skipped":
            assert row["skipped"]  # the reranker that is not configured: skipped for every embedder alike
            continue
        for metric in PAIRED_METRICS:
            low, high = row[metric]["ci95"]
            assert row[metric]["n"] == 6 and low <= row[metric]["mean"] <= high
    assert sum("skipped" not in row for row in paired) >= 2 * len(PAIRED_METRICS)

    # Again: every index is up to date, so none is ingested; the text output names each embedder.
    code, printed, err = run(capsys, *eval_args(docs, *tiny_embedders))
    assert code == 0, err
    assert re.search(r"embedder .*: (built|rebuilt|updated) index", err) is None
    assert "for 3 embedders" in printed
    for name in names:
        assert f"== embedder {name} (" in printed
    assert "embedder - minilm-l6 (the reference) on the same questions" in printed
    assert "evidence hit@5" in printed and any(v in printed for v in ("better", "worse", "not separable"))


def test_an_index_of_another_embedder_is_rebuilt(
    docs: Path, ragtune_home: Path, tiny_embedders: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    first, second = tiny_embedders
    code, _, err = run(capsys, "ingest", str(docs), sets=[*SETTINGS, f"embedder.model={second}"])
    assert code == 0, err
    # embedder.model is the reference and keeps index `default`, which holds the other one's vectors.
    sets = [*SETTINGS, f"embedder.model={first}"]
    code, printed, err = run(capsys, *eval_args(docs, second, first), "--json", sets=sets)
    assert code == 0, err
    results = json.loads(printed)
    assert list(results["embedders"]) == [str(first), str(second)]  # listing the reference is no error
    assert [e["ingest"] for e in results["embedders"].values()] == ["rebuilt", "built"]
    assert f"embedder {first}: rebuilt index default from {docs}" in err
    assert all("skipped" in row or row["evidence_hit@5"]["n"] == 6 for row in results["paired"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--retrieval-only", "--embedders", "no-such-embedder"], "'no-such-embedder': neither a preset"),
        (["--retrieval-only", "--embedders", "minilm-l6", "minilm-l6"], "names 'minilm-l6' twice"),
        (["--embedders", "minilm-l6"], "--embedders needs --retrieval-only"),
    ],
)
def test_bad_embedders_are_one_line_errors(
    argv: list[str], message: str, docs: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = run(capsys, "eval", "--questions", str(QUESTIONS), "--docs", str(docs), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    if "neither" in message:
        assert "ragtune embedders list" in err

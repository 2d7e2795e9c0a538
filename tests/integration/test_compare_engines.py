"""`ragtune compare` on the scale-out engines: the same command on Milvus Lite and on a remote OpenAI-compatible
server (a second `ragtune serve` on loopback) runs, names the engines in its report, and retrieves as hnswlib
does; a server that is down stops it before anything is written, naming the key to fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune.cli import main
from tests.conftest import EXAMPLES
from tests.integration.test_compare import tiny_sets
from tests.remote import ServedRagtune, free_port, served_ragtune

RETRIEVAL = ("hit@3", "mrr", "doc_hit@1", "doc_hit@5", "evidence_hit@1", "evidence_hit@5")


def compare(docs: Path, out: Path, tiny_lm_path: Path, *sets: str, paths: str = "base,rag") -> list[str]:
    """The shipped example's compare command (base and rag by default, every question) with `sets` added."""
    command = ["compare", "--docs", str(docs), "--questions", str(EXAMPLES / "questions.jsonl")]
    command += ["--paths", paths, "-o", str(out), *tiny_sets(tiny_lm_path)]
    return command + [arg for s in sets for arg in ("--set", s)]


def rows(out: Path, path: str) -> list[dict]:
    return [json.loads(line) for line in (out / "answers" / path / "answers.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compare_on_milvus_lite_names_it_and_retrieves_as_hnswlib_does(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    local, remote = tmp_path / "hnswlib", tmp_path / "milvus"
    uri = str(tmp_path / "milvus.db")
    # rag alone: base reads no index, and the index is all that differs between the two runs.
    assert main(compare(docs, local, tiny_lm_path, paths="rag")) == 0, capsys.readouterr().err
    milvus = ["index.backend=milvus", f"index.uri={uri}"]
    assert main(compare(docs, remote, tiny_lm_path, *milvus, paths="rag")) == 0, capsys.readouterr().err
    ran = json.loads((remote / "results.json").read_text())
    assert ran["complete"] and ran["backends"]["index"] == f"milvus ({uri})"
    assert f"Backends: index milvus ({uri})," in (remote / "report.md").read_text()
    assert ran["paths"]["rag"]["config"]["index"]["backend"] == "milvus"
    baseline = json.loads((local / "results.json").read_text())
    assert baseline["backends"]["index"] == "hnswlib"
    ours, theirs = ran["paths"]["rag"]["metrics"], baseline["paths"]["rag"]["metrics"]
    assert {m: ours[m]["mean"] for m in RETRIEVAL} == {m: theirs[m]["mean"] for m in RETRIEVAL}
    assert ours["hit@3"]["n"] == 6
    # Question by question the same top chunk: the engines search the same vectors, not merely score alike.
    top = {r["id"]: r["ranked_chunks"][0] for r in rows(local, "rag")}
    assert {r["id"]: r["ranked_chunks"][0] for r in rows(remote, "rag")} == top


@pytest.fixture(scope="module")
def served(tiny_lm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRagtune]:
    with served_ragtune(tiny_lm_path, tmp_path_factory.mktemp("served")) as server:
        yield server


def remote_sets(server: ServedRagtune) -> list[str]:
    return [
        "llm.backend=openai",
        f"llm.base_url={server.url}/v1",
        f"llm.api_key_file={server.key_file}",
        "llm.served_model=base",
    ]


@pytest.mark.slow
def test_compare_answers_through_a_remote_openai_server_and_names_it(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, served: ServedRagtune, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    assert main(compare(docs, out, tiny_lm_path, *remote_sets(served))) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["backends"]["llm"] == f"openai ({served.url}/v1)"
    assert f"llm openai ({served.url}/v1)." in (out / "report.md").read_text()
    for path in ("base", "rag"):
        assert results["paths"][path]["config"]["llm"]["backend"] == "openai"
        answered = rows(out, path)
        assert len(answered) == 6
        # Every answer was written by the server: its usage counts the tokens it generated (max_new_tokens=6).
        assert all(0 < r["completion_tokens"] <= 6 for r in answered)
    assert any(r["prediction"].strip() for r in rows(out, "base"))
    assert results["paths"]["rag"]["metrics"]["hit@3"]["mean"] == 1.0  # retrieval stays here, on the real embedder


@pytest.mark.slow
def test_a_server_without_the_trained_lora_stops_compare_before_any_answer_and_serving_it_completes(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, ragtune_home: Path, served: ServedRagtune, capsys
) -> None:
    out = tmp_path / "report"
    command = compare(docs, out, tiny_lm_path, *remote_sets(served))
    command[command.index("base,rag")] = "finetune"
    command += ["--train-data", str(EXAMPLES / "train.jsonl")]
    assert main(command) == 2
    (adapter,) = (ragtune_home / "adapters").iterdir()  # trained here, under a name derived from its inputs
    err = capsys.readouterr().err
    assert f"served model lacks LoRA {adapter.name}; start the server with --lora-modules {adapter.name}=DIR" in err
    assert "run the same compare again once the server serves it" in err and "Traceback" not in err
    assert not (out / "answers").exists()  # stopped after training, before the finetune path answered
    assert not json.loads((out / "results.json").read_text())["complete"]

    served.add_adapter(adapter.name, adapter)  # the server now serves it, as finetune:NAME
    assert main(command) == 0, capsys.readouterr().err
    assert "train:finetune: finished earlier, kept" in capsys.readouterr().out  # not trained again
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["paths"]["finetune"]["config"]["finetune"]["adapter"] == adapter.name
    assert all(0 < r["completion_tokens"] <= 6 for r in rows(out, "finetune"))


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (("index.backend=milvus", "index.uri=http://127.0.0.1:{port}"), "index.uri=http://127.0.0.1:{port}"),
        (("llm.backend=openai", "llm.base_url=http://127.0.0.1:{port}/v1"), "llm.base_url=http://127.0.0.1:{port}/v1"),
        (("index.backend=milvus", "index.uri={tmp}/a-file/milvus.db"), "index.uri={tmp}/a-file/milvus.db"),
    ],
    ids=["milvus-down", "llm-server-down", "milvus-file-under-a-file"],
)
def test_an_engine_that_cannot_be_reached_stops_compare_before_anything_is_written(
    docs: Path, tiny_lm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture, sets: tuple, key: str
) -> None:
    values = {"port": free_port(), "tmp": tmp_path}  # nothing listens on the port
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "report"
    assert main(compare(docs, out, tiny_lm_path, *(s.format(**values) for s in sets))) == 2
    err = capsys.readouterr().err
    assert err.startswith("ragtune: error: ") and key.format(**values) in err
    assert "Traceback" not in err and err.count("\n") == 1  # one line, naming the key to fix
    assert not out.exists()  # no config, log, phase record or report

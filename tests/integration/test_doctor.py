"""`ragtune doctor`: every check on a real setup (tiny LM, the packaged embedder), and each failure it must catch."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from models.config import load_config
from models.errors import RagtuneError
from models.paths import index_dir
from rag.collection import current_generation
from ragtune.cli import main
from ragtune.doctor import _verify_record, run_checks
from tests.remote import free_port


def doctor(capsys: pytest.CaptureFixture, *overrides: str) -> tuple[int, dict[str, dict]]:
    argv = ["doctor", "--json"]
    for override in overrides:
        argv += ["--set", override]
    code = main(argv)
    checks = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in checks}


@pytest.fixture
def tiny(tiny_lm_path: Path) -> list[str]:
    return [f"llm.model={tiny_lm_path}"]


def test_a_healthy_setup_passes_and_names_what_it_checked(tiny, docs: Path, capsys) -> None:
    code, checks = doctor(capsys, *tiny)
    assert code == 0
    assert checks["index"]["status"] == "warn" and "ragtune ingest" in checks["index"]["fix"]
    assert main(["ingest", str(docs), "--set", tiny[0]]) == 0
    capsys.readouterr()
    code, checks = doctor(capsys, *tiny)
    assert code == 0, checks
    assert set(checks) >= {"versions", "backend", "embedder.model", "llm.model", "index", "memory", "threads", "gpu"}
    assert "torch " in checks["versions"]["detail"] and "transformers" in checks["backend"]["detail"]
    assert "llm.backend=auto: the model is no GGUF" in checks["backend"]["detail"]  # the reason it was chosen
    assert checks["embedder.model"]["status"] == "ok" and "match the hashes" in checks["embedder.model"]["detail"]
    assert checks["index"]["status"] == "ok" and "gen-" in checks["index"]["detail"]
    assert all(c["status"] in ("ok", "warn") for c in checks.values())
    assert "eval.judge.model" not in checks  # no judge configured: nothing to check


def test_a_damaged_index_fails_with_the_fix(tiny, docs: Path, capsys) -> None:
    assert main(["ingest", str(docs), "--set", tiny[0]]) == 0
    config = load_config(None, tiny)
    folder = index_dir(config) / current_generation(index_dir(config))
    store = folder / "chunks.sqlite"
    data = bytearray(store.read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(bytes(data))
    capsys.readouterr()
    code, checks = doctor(capsys, *tiny)
    assert code == 1
    assert checks["index"]["status"] == "fail" and "chunks.sqlite" in checks["index"]["detail"]
    assert "--rebuild" in checks["index"]["fix"]


def test_a_readable_serve_key_fails_and_says_chmod(tiny, tmp_path: Path, capsys) -> None:
    key = tmp_path / "key.txt"
    key.write_text("k" * 40)
    key.chmod(0o644)
    code, checks = doctor(capsys, *tiny, f"serve.api_key_file={key}")
    assert code == 1 and checks["serve key"]["status"] == "fail"
    assert checks["serve key"]["fix"] == f"chmod 600 {key}"
    key.chmod(0o600)
    code, checks = doctor(capsys, *tiny, f"serve.api_key_file={key}")
    assert checks["serve key"]["status"] == "ok" and code == 0


def test_cuda_asked_for_without_a_gpu_fails(tiny, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: llm.device=cuda is fine here")
    code, checks = doctor(capsys, *tiny, "llm.device=cuda")
    assert code == 1 and checks["gpu"]["status"] == "fail" and "llm.device=auto" in checks["gpu"]["fix"]


def test_a_missing_local_model_fails(capsys, tmp_path: Path) -> None:
    code, checks = doctor(capsys, f"llm.model={tmp_path / 'nowhere'}")
    assert code == 1 and checks["llm.model"]["status"] == "fail"


def test_the_judge_model_is_checked_like_the_lm(tiny, capsys, tmp_path: Path) -> None:
    code, checks = doctor(capsys, *tiny, "eval.judge.model=smollm2-135m-instruct")
    assert (
        checks["eval.judge.model"]["status"] == "ok" and "smollm2-135m-instruct" in checks["eval.judge.model"]["detail"]
    )
    code, checks = doctor(capsys, *tiny, f"eval.judge.model={tmp_path / 'nowhere.gguf'}")
    assert code == 1 and checks["eval.judge.model"]["status"] == "fail"
    code, checks = doctor(capsys, *tiny, "eval.judge.model=minilm-l6")  # an embedder: it cannot judge
    assert code == 1 and "'minilm-l6' is not a lm preset; lm presets: " in checks["eval.judge.model"]["detail"]
    assert "set eval.judge.model to one of those presets" in checks["eval.judge.model"]["fix"]
    code, checks = doctor(capsys, "llm.model=minilm-l6")  # the same check for the LM, as loading it refuses
    assert code == 1 and "'minilm-l6' is not a lm preset" in checks["llm.model"]["detail"]


def test_a_truncated_local_gguf_fails_as_the_engine_would_refuse_it(capsys, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (272).to_bytes(8, "little") + (33).to_bytes(8, "little"))
    code, checks = doctor(capsys, f"llm.model={cut}")
    assert code == 1 and checks["llm.model"]["status"] == "fail"
    assert "truncated" in checks["llm.model"]["detail"] and "re-copy" in checks["llm.model"]["fix"]


def test_the_text_report_is_one_line_per_check_with_fixes(tiny, capsys) -> None:
    assert main(["doctor", "--set", tiny[0]]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("doctor: ") and "0 failed" in out
    assert any(line.startswith("warn  index") for line in out.splitlines())
    assert "fix: ragtune ingest DOCS_FOLDER" in out


def install_fake_distribution(site: Path) -> Path:
    """A package installed the way pip leaves it: files plus a RECORD with their sha256."""
    package = site / "carrier_pkg"
    package.mkdir(parents=True)
    weights = package / "weights.bin"
    weights.write_bytes(bytes(range(256)) * 64)
    info = site / "carrier_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: carrier-pkg\nVersion: 1.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(weights.read_bytes()).digest()).rstrip(b"=").decode()
    size = weights.stat().st_size
    (info / "RECORD").write_text(
        f"carrier_pkg/weights.bin,sha256={digest},{size}\ncarrier_pkg-1.0.dist-info/RECORD,,\n"
    )
    return weights


def test_model_files_are_checked_against_pips_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = install_fake_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert _verify_record("carrier_pkg") == 1
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(RagtuneError, match="weights.bin does not match the hash pip recorded"):
        _verify_record("carrier_pkg")
    weights.unlink()
    with pytest.raises(RagtuneError, match="weights.bin is missing"):
        _verify_record("carrier_pkg")


def test_a_check_that_crashes_is_a_failure_not_a_silence(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragtune import doctor as module

    def broken(config):
        raise OSError("disk on fire")

    monkeypatch.setattr(module, "CHECKS", (broken,))
    (check,) = run_checks(load_config(None, tiny))
    assert check.status == "fail" and "disk on fire" in check.detail


def test_a_remote_llm_is_checked_at_its_server_not_as_a_local_path(
    tiny_lm_path: Path, embedder, tmp_path: Path, capsys
) -> None:
    from models.generate import load_language_model
    from ragtune.serve.background import running
    from ragtune.serve.engine import Engine
    from ragtune.serve.routes import create_app
    from tests.remote import KEY

    served = load_config(None, [f"llm.model={tiny_lm_path}", "llm.dtype=float32", "llm.device=cpu"])
    engine = Engine(served, embedder=embedder, lm=load_language_model(served.llm, progress=False))
    (tmp_path / "key").write_text(KEY)
    remote = ["llm.backend=openai", f"llm.api_key_file={tmp_path / 'key'}", "llm.model=base"]  # a name, no path
    with running(create_app(engine, KEY)) as url:
        _, checks = doctor(capsys, *remote, f"llm.base_url={url}/v1")
        assert checks["backend"]["status"] == "ok" and checks["backend"]["detail"].startswith("openai ")
        assert "llm.model" not in checks  # not looked for on this machine
        assert checks["llm.base_url"]["status"] == "ok" and "serves 'base'" in checks["llm.base_url"]["detail"]
        code, checks = doctor(capsys, *remote, f"llm.base_url={url}/v1", "llm.served_model=ghost")
        assert code == 1 and "not 'ghost'" in checks["llm.base_url"]["detail"]
    code, checks = doctor(capsys, *remote, f"llm.base_url=http://127.0.0.1:{free_port()}/v1")
    assert code == 1 and checks["llm.base_url"]["status"] == "fail"
    assert "start the server" in checks["llm.base_url"]["fix"]


def test_a_milvus_node_without_the_index_folder_reports_the_served_generation(
    tiny, docs: Path, embedder, tmp_path: Path, ragtune_home: Path, capsys
) -> None:
    import shutil

    from rag.index.milvus_client import disconnect
    from rag.ingest import ingest

    milvus = ["index.backend=milvus", f"index.uri={tmp_path / 'm.db'}", "index.name=lib", "rag.retriever=dense"]
    _, checks = doctor(capsys, *tiny, *milvus)
    assert checks["index"]["status"] == "warn" and "serves no 'lib'" in checks["index"]["detail"]
    config = load_config(None, [*tiny, *milvus])
    generation = ingest([docs], config, embedder, progress=False).generation
    disconnect(config.index)  # Milvus Lite: one process... and one client at a time
    shutil.rmtree(ragtune_home)  # this node keeps only index.uri
    code, checks = doctor(capsys, *tiny, *milvus)
    assert checks["index"]["status"] == "ok", checks["index"]
    assert checks["index"]["detail"].startswith(f"{generation} served by index.uri=")
    code, checks = doctor(capsys, *tiny, "index.backend=milvus", f"index.uri=http://127.0.0.1:{free_port()}")
    assert code == 1 and checks["index"]["status"] == "fail" and "cannot be reached" in checks["index"]["detail"]
    assert "start the Milvus server" in checks["index"]["fix"]

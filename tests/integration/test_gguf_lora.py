"""GGUF LoRA export on the small packaged LM: layout, manifest, the prepare step, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from finetune.adapters import MANIFEST, read_adapter, usable_adapter
from finetune.gguf_export import export_gguf_lora, prepare_adapter
from models.errors import AdapterError
from models.gguf import gguf_sha256, read_gguf_header
from models.gguf.lora import BASE_SHA256_KEY, GGUF_LORA_FILE, check_lora_gguf
from models.paths import adapters_dir
from models.presets import PRESETS, piece_paths
from tests.gguf_files import write_out

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    return piece_paths(PRESETS[SMOL])[0]


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA (r=4 on q, k, v, o and the MLP's down projection) with random, nonzero B, and a manifest."""
    from tests.gguf_lora_helpers import random_lora_folder

    return random_lora_folder(tmp_path_factory.mktemp("peft") / "smol-random", SMOL, seed=0)


def install(peft_folder: Path, name: str = "smol-random") -> Path:
    """Copy the prepared adapter under this test's RAGTUNE_HOME."""
    target = adapters_dir() / name
    shutil.copytree(peft_folder, target)
    return target


def test_export_writes_llama_cpp_layout_and_lists_it_in_the_manifest(peft_folder: Path, base_gguf: Path) -> None:
    folder = install(peft_folder)
    out = export_gguf_lora(folder, base_gguf, PRESETS[SMOL].sha256)
    assert out == folder / GGUF_LORA_FILE and not list(folder.glob(".*.tmp"))
    header = read_gguf_header(out)
    meta = header.metadata
    assert (meta["general.type"], meta["adapter.type"], meta["general.architecture"]) == ("adapter", "lora", "llama")
    assert meta["adapter.lora.alpha"] == 8.0 and meta[BASE_SHA256_KEY] == PRESETS[SMOL].sha256
    base = read_gguf_header(base_gguf)
    # 30 blocks x 5 targets, each an (a, b) pair; GGUF order: a is (in, r), b is (r, out) like the base (in, out).
    assert len(header.tensors) == 30 * 5 * 2
    a, b = header.tensors["blk.3.attn_k.weight.lora_a"], header.tensors["blk.3.attn_k.weight.lora_b"]
    assert a.shape == (576, 4) and b.shape == (4, 192) == (4, base.tensors["blk.3.attn_k.weight"].shape[1])
    assert header.tensors["blk.0.ffn_down.weight.lora_a"].shape == (1536, 4)
    info = read_adapter("smol-random")  # every file, the GGUF included, hashed against the manifest
    assert info.manifest["files"][GGUF_LORA_FILE]["size"] == out.stat().st_size
    check_lora_gguf(out, base_gguf)


def test_exported_values_are_peft_values_with_llama_rows_reordered(peft_folder: Path, base_gguf: Path) -> None:
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    out = export_gguf_lora(install(peft_folder), base_gguf)
    written = {t.name: np.array(t.data) for t in GGUFReader(out).tensors}
    peft = load_file(peft_folder / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.2."
    np.testing.assert_array_equal(
        written["blk.2.attn_v.weight.lora_a"], peft[prefix + "self_attn.v_proj.lora_A.weight"]
    )
    np.testing.assert_array_equal(
        written["blk.2.attn_v.weight.lora_b"], peft[prefix + "self_attn.v_proj.lora_B.weight"]
    )
    # q rows: 9 heads of 64 rows, halves interleaved in the GGUF; same rows, other order.
    q = peft[prefix + "self_attn.q_proj.lora_B.weight"]
    gq = written["blk.2.attn_q.weight.lora_b"]
    assert not np.array_equal(gq, q) and np.array_equal(np.sort(gq, axis=0), np.sort(q, axis=0))
    np.testing.assert_array_equal(gq[1], q[32])  # row 1 of head 0 is the first row of its second half


def test_truncated_lora_gguf_is_refused(peft_folder: Path, base_gguf: Path, tmp_path: Path) -> None:
    out = export_gguf_lora(install(peft_folder), base_gguf)
    for keep in (out.stat().st_size - 100, 2000, 30):
        cut = tmp_path / f"cut-{keep}.gguf"
        cut.write_bytes(out.read_bytes()[:keep])
        with pytest.raises(AdapterError, match=rf"{cut}.*(truncated|too short)"):
            check_lora_gguf(cut, base_gguf)


def test_non_gguf_and_non_lora_files_are_refused(peft_folder: Path, base_gguf: Path, tmp_path: Path) -> None:
    fake = tmp_path / "adapter_model.gguf"
    shutil.copy(peft_folder / "adapter_model.safetensors", fake)
    with pytest.raises(AdapterError, match=rf"{fake}: not a GGUF file"):
        check_lora_gguf(fake, base_gguf)
    with pytest.raises(AdapterError, match=r"a GGUF file but no LoRA adapter \(general.type='model'"):
        check_lora_gguf(base_gguf, base_gguf)  # a whole model given as the adapter
    with pytest.raises(AdapterError, match="no such GGUF file"):
        check_lora_gguf(tmp_path / "absent.gguf", base_gguf)


def test_lora_written_for_another_base_is_refused(peft_folder: Path, base_gguf: Path) -> None:
    other = "0" * 64  # as if the base GGUF had other weights
    out = export_gguf_lora(install(peft_folder), base_gguf, base_sha256=other)
    with pytest.raises(AdapterError, match=f"written for the base model with sha256 {other} but .* has sha256 "):
        check_lora_gguf(out, base_gguf)
    check_lora_gguf(out, base_gguf, base_sha256=other)  # the recorded fingerprint is what is compared


def test_lora_for_another_architecture_is_refused(base_gguf: Path, tmp_path: Path) -> None:
    from gguf import GGUFType, GGUFWriter, Keys

    path = tmp_path / "qwen2-lora.gguf"
    writer = GGUFWriter(path, "qwen2")  # a well-formed LoRA, for a Qwen2 model, claiming this very base
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, 16.0)
    writer.add_string(BASE_SHA256_KEY, gguf_sha256(base_gguf))
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 896), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((896, 8), np.float32))
    write_out(writer)
    with pytest.raises(AdapterError, match=rf"{path}: a LoRA for architecture 'qwen2' but the base .* is 'llama'"):
        check_lora_gguf(path, base_gguf)


def test_adapters_llama_cpp_cannot_express_are_refused(peft_folder: Path, base_gguf: Path) -> None:
    cases = {
        "use_dora": (True, "DoRA"),
        "modules_to_save": (["lm_head"], "modules_to_save"),
        "bias": ("all", "bias='all'"),
        "peft_type": ("PREFIX_TUNING", "peft_type 'PREFIX_TUNING'"),
    }
    for index, (key, (value, message)) in enumerate(cases.items()):
        folder = install(peft_folder, f"odd-{index}")
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(AdapterError, match=message):
            export_gguf_lora(folder, base_gguf)
        assert not (folder / GGUF_LORA_FILE).exists()
    full = install(peft_folder, "full")
    (full / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="no adapter_config.json.*full fine-tune"):
        export_gguf_lora(full, base_gguf)


@pytest.mark.parametrize("key", ["r", "lora_alpha"])
def test_an_adapter_config_without_its_rank_or_alpha_is_refused_by_name(
    peft_folder: Path, base_gguf: Path, key: str
) -> None:
    folder = install(peft_folder, f"no-{key.replace('_', '-')}")
    config = json.loads((folder / "adapter_config.json").read_text())
    del config[key]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match=rf"{folder / 'adapter_config.json'}: {key} should be a positive"):
        export_gguf_lora(folder, base_gguf)


def test_a_base_gguf_without_block_count_is_refused_by_name(peft_folder: Path, tmp_path: Path) -> None:
    from gguf import GGUFWriter

    base = tmp_path / "headless.gguf"
    writer = GGUFWriter(str(base), "llama")
    writer.add_tensor("token_embd.weight", np.ones(64, dtype=np.float32))
    write_out(writer)
    with pytest.raises(AdapterError, match=rf"{base}: the base GGUF has no usable llama.block_count"):
        export_gguf_lora(install(peft_folder, "no-blocks"), base)


def test_a_failed_gguf_write_closes_its_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from gguf import GGUFWriter

    from models.gguf.convert import _write_atomic

    def disk_full(self: GGUFWriter) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(GGUFWriter, "write_kv_data_to_file", disk_full)  # fails after the file was opened
    before = set(os.listdir("/proc/self/fd"))
    out = tmp_path / GGUF_LORA_FILE
    with pytest.raises(OSError, match="No space left") as failed:
        _write_atomic(out, "llama", 8.0, {"x.lora_a": np.ones((4, 8), np.float32)}, "0" * 64, "1" * 64)
    # While the error (and its frames, which hold the writer) is alive, its file must already be closed.
    assert failed.value is not None and set(os.listdir("/proc/self/fd")) <= before
    assert list(tmp_path.iterdir()) == []


def test_lora_on_modules_llama_cpp_cannot_map_is_refused(peft_folder: Path, tmp_path: Path, base_gguf: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from tests.gguf_lora_helpers import random_lora_folder

    # SmolLM2 ties its output head to the embeddings: PEFT then saves the whole embedding layer too.
    folder = random_lora_folder(tmp_path / "head", SMOL, seed=1, targets=("q_proj", "lm_head"))
    with pytest.raises(AdapterError, match=r"tensor base_model.model.lm_head.base_layer.weight is not a LoRA A/B"):
        export_gguf_lora(folder, base_gguf)
    # A module the GGUF tensor map does not know (as from a model with extra projections).
    folder = install(peft_folder, "mystery")
    weights = load_file(folder / "adapter_model.safetensors")
    renamed = {k.replace("layers.0.mlp.down_proj", "layers.0.mlp.mystery_proj"): v for k, v in weights.items()}
    save_file(renamed, folder / "adapter_model.safetensors")
    with pytest.raises(
        AdapterError, match=r"the LoRA on model.layers.0.mlp.mystery_proj has no counterpart in the base"
    ):
        export_gguf_lora(folder, base_gguf)


def test_older_adapter_is_converted_once_by_prepare(peft_folder: Path, base_gguf: Path) -> None:
    install(peft_folder)
    assert prepare_adapter("smol-random", SMOL).converted  # what `ragtune adapters prepare` does
    info = usable_adapter("smol-random", base_gguf)  # what build_generator does when the engine runs the GGUF
    path = info.path / GGUF_LORA_FILE
    assert GGUF_LORA_FILE in info.manifest["files"] and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = prepare_adapter("smol-random", SMOL)
    assert not again.converted and again.info.path / GGUF_LORA_FILE == path
    assert path.stat().st_mtime_ns == stamp  # not converted again
    with open(path, "r+b") as handle:  # damage it: the manifest's hash catches it
        handle.seek(-10, 2)
        handle.write(b"\xff" * 10)
    with pytest.raises(AdapterError, match="smol-random.*damaged"):
        usable_adapter("smol-random", base_gguf)


def test_a_usable_adapter_over_a_gguf_base_hashes_each_file_once(
    peft_folder: Path, base_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.storage

    prepare_adapter(install(peft_folder, "once").name, SMOL)
    usable_adapter("once", base_gguf)  # the first use; then as on every later use
    hashed: list[str] = []
    real = models.storage.sha256_file
    monkeypatch.setattr(models.storage, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    info = usable_adapter("once", base_gguf, gguf_sha256(base_gguf))
    assert sorted(hashed) == sorted(info.manifest["files"])  # every listed file, each once, the base not at all


def test_concurrent_first_loads_of_an_adapter_init_it_once(
    peft_folder: Path, base_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests that both find the adapter missing must not both load it (the second handle would leak)."""
    import threading
    import time

    llama_cpp = pytest.importorskip("llama_cpp")
    from models.config import LLMConfig
    from models.generate import AdapterRef, load_language_model

    prepare_adapter(install(peft_folder, "racing").name, SMOL)
    info = usable_adapter("racing", base_gguf)
    lm = load_language_model(LLMConfig(model=SMOL, backend="llamacpp", context_window=256), progress=False)
    inits: list[bytes] = []
    real = llama_cpp.llama_adapter_lora_init
    monkeypatch.setattr(
        llama_cpp, "llama_adapter_lora_init", lambda model, path: inits.append(path) or real(model, path)
    )
    with lm.lock:  # both threads pass the first has_adapter check and wait here, as under a running request
        threads = [threading.Thread(target=lm.load_adapter, args=(AdapterRef(info.name, info.path),)) for _ in "ab"]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # both reach the lock (their checks read two small headers)
    for thread in threads:
        thread.join(timeout=30)
    assert len(inits) == 1 and lm.has_adapter("racing")


def test_llama_cpp_log_keeps_errors_and_drops_the_rest(capfd: pytest.CaptureFixture[str]) -> None:
    """Level by level (ggml.h): a warning and its continuation dropped, an error and its continuation kept."""
    from models.engines.llamacpp import _print_errors

    for level, text in ((3, b"a warning "), (5, b"goes on\n"), (4, b"an error "), (5, b"goes on\n"), (2, b"info\n")):
        _print_errors(level, text, None)
    assert capfd.readouterr().err == "an error goes on\n"


def test_adapter_of_another_base_is_refused_over_a_gguf_base(peft_folder: Path, base_gguf: Path) -> None:
    folder = install(peft_folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["base_model"] = "qwen2.5-coder-0.5b-instruct"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(AdapterError, match="trained on base model 'qwen2.5-coder-0.5b-instruct'.*GGUF sha256 1d96"):
        usable_adapter("smol-random", base_gguf)
    assert not (folder / GGUF_LORA_FILE).exists()


@pytest.mark.slow
def test_llama_cpp_with_the_gguf_lora_follows_peft(peft_folder: Path, base_gguf: Path) -> None:
    """The same adapter: llama.cpp's next-token shift points where PEFT's does, and greedy answers follow."""
    pytest.importorskip("llama_cpp")
    from tests.gguf_lora_helpers import compare_engines

    lora = export_gguf_lora(install(peft_folder), base_gguf)
    result = compare_engines(SMOL, base_gguf, peft_folder, lora)
    print(result.summary())
    assert_same_adapter(result)


def assert_same_adapter(result) -> None:
    """llama.cpp with the GGUF LoRA moves toward PEFT on transformers, as far as the engines' own gap allows."""
    n = len(result.hf_base)
    # The adapter shifts the next-token logits the same way on both engines (measured: mean ~0.95; a q/k-only
    # LoRA written without reordering its rows gave a mean of 0.41, one prompt at -0.5), toward PEFT's everywhere.
    assert np.mean(result.delta_cosines) > 0.85 and min(result.delta_cosines) > 0.6, result.summary()
    assert result.closer == n, result.summary()
    # Greedy continuations: where the adapter changed PEFT's, llama.cpp's follows on most prompts;
    # llama.cpp+LoRA agrees with PEFT about as often as the two bases agree (quantised activations vs float32).
    assert result.moved >= 2 and result.followed >= 0.75 * result.moved, result.summary()
    assert result.share >= result.base_share - 0.25, result.summary()


QWEN = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def qwen_lora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A random PEFT LoRA on the default 0.5B LM exported to GGUF from the preset's pieces, as after training,
    and the base assembled: (PEFT folder, GGUF LoRA, base GGUF)."""
    from models.gguf import pieces_sha256
    from tests.gguf_lora_helpers import random_lora_folder

    folder = tmp_path_factory.mktemp("qwen")
    pieces = piece_paths(PRESETS[QWEN])
    base = folder / "base.gguf"
    assert pieces_sha256(pieces, base) == PRESETS[QWEN].sha256
    # Milder than on SmolLM2: the engines' own gap is smaller here (bases agree more), and a LoRA as strong
    # as std 0.15 flattens the 0.5B's distributions until greedy picks between near-ties (measured: logit
    # shift cosine 0.998, yet exact 8-token continuations equal on only 4 of 8 prompts).
    peft = random_lora_folder(folder / "qwen-random", QWEN, seed=0, std=0.05)
    return peft, export_gguf_lora(peft, pieces, PRESETS[QWEN].sha256), base


@pytest.mark.slow
def test_llama_cpp_with_the_gguf_lora_follows_peft_on_the_default_lm(qwen_lora: tuple[Path, Path, Path]) -> None:
    """The same check on the default 0.5B LM (Qwen2: no row reordering), whose GGUF comes in six pieces."""
    pytest.importorskip("llama_cpp")
    from tests.gguf_lora_helpers import compare_engines

    peft, lora, base = qwen_lora
    check_lora_gguf(lora, base)
    result = compare_engines(QWEN, base, peft, lora)
    print(result.summary())
    assert_same_adapter(result)


@pytest.mark.slow
def test_an_mlp_adapter_loads_without_llama_cpp_warnings(
    qwen_lora: tuple[Path, Path, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """The LoRA covers ffn_down, which llama.cpp repacks on this base: it printed a warning per layer at load."""
    pytest.importorskip("llama_cpp")
    from models.config import LLMConfig
    from models.generate import AdapterRef, load_language_model

    lm = load_language_model(LLMConfig(model=QWEN, backend="llamacpp", context_window=256), progress=False)
    capfd.readouterr()
    lm.load_adapter(AdapterRef("qwen-random", qwen_lora[0]))
    assert lm.has_adapter("qwen-random") and capfd.readouterr().err == ""


@pytest.mark.slow
def test_training_on_a_gguf_base_also_writes_the_gguf_lora(tmp_path: Path) -> None:
    from finetune.train import GgufExportWarning, train
    from models.config import load_config

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}."}) + "\n" for i in range(4)))
    sets = ["llm.model=" + SMOL, "llm.device=cpu", "finetune.max_steps=1", "finetune.batch_size=2"]
    sets += ["finetune.eval_fraction=0", "finetune.warmup_ratio=0"]
    result = train(load_config(None, sets), data, "smol-trained", progress=False)
    info = read_adapter("smol-trained")
    assert info.manifest["base_gguf_sha256"] == PRESETS[SMOL].sha256
    assert GGUF_LORA_FILE in info.manifest["files"] and result.path == info.path
    check_lora_gguf(info.path / GGUF_LORA_FILE, piece_paths(PRESETS[SMOL]))
    # An adapter llama.cpp cannot express: the PEFT adapter is kept, and the reason is said.
    sets.append("finetune.lora.target_modules=[q_proj,lm_head]")
    with pytest.warns(GgufExportWarning, match="its GGUF LoRA for llama.cpp was not written"):
        train(load_config(None, sets), data, "smol-head", progress=False)
    info = read_adapter("smol-head")
    assert "adapter_model.safetensors" in info.manifest["files"] and GGUF_LORA_FILE not in info.manifest["files"]

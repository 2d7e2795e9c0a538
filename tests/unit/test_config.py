from pathlib import Path
from typing import Any

import pytest
import yaml

from models.config import Config, apply_overrides, load_config, to_dict
from models.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_default_yaml_is_exactly_the_builtin_defaults() -> None:
    assert load_config(REPO / "configs" / "default.yaml") == Config()
    assert yaml.safe_load((REPO / "configs" / "default.yaml").read_text()) == to_dict(Config())


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"rag": {"top_k": 3}} -> {"rag.top_k": 3}: the dotted keys `--set` names."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_shipped_config_loads_and_changes_only_the_keys_it_sets() -> None:
    shipped = sorted((REPO / "configs").glob("*.yaml"))
    assert {"default.yaml", "small.yaml"} <= {p.name for p in shipped}  # the loop below is never empty
    defaults = flat(to_dict(Config()))
    for path in shipped:
        written = flat(yaml.safe_load(path.read_text()) or {})
        loaded = flat(to_dict(load_config(path)))
        assert set(written) <= set(defaults), f"{path.name}: keys the config does not know"
        assert {k: loaded[k] for k in written} == written, f"{path.name}: a key did not load as written"
        changed = {k for k in defaults if loaded[k] != defaults[k]}
        assert changed <= set(written), f"{path.name}: {sorted(changed - set(written))} differ from the defaults"
    assert flat(to_dict(load_config(REPO / "configs" / "small.yaml"))) == {
        **defaults,
        "llm.model": "smollm2-135m-instruct",
    }


def test_overrides_are_typed_from_their_text() -> None:
    config = load_config(
        None, ["rag.top_k=7", "llm.temperature=0.5", "mode=hybrid", "finetune.lora.target_modules=q,v"]
    )
    assert config.rag.top_k == 7 and config.llm.temperature == 0.5 and config.mode == "hybrid"
    assert config.finetune.lora.target_modules == ["q", "v"]
    top_p = load_config(None, ["llm.top_p=1"]).llm.top_p
    assert top_p == 1.0 and type(top_p) is float  # "1" reads as an int; the key's type makes it a float


def test_exponent_floats_are_floats_in_overrides_and_files(tmp_path: Path) -> None:
    # PyYAML reads 1e-3 (no dot in the mantissa) as a string; a learning rate is naturally written so.
    assert load_config(None, ["finetune.lr=1e-3"]).finetune.lr == 0.001
    assert load_config(write(tmp_path, "finetune:\n  lr: 5E-4\n")).finetune.lr == 0.0005
    with pytest.raises(ConfigError, match="finetune.lr .*should be float, got '1e-x'"):
        load_config(None, ["finetune.lr=1e-x"])


def test_unknown_key_names_the_dotted_key_the_line_and_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: rag\nrag:\n  top_k: 3\n  chunk_size: 100\n")
    with pytest.raises(
        ConfigError, match=r"unknown key rag\.chunk_size \(.*c\.yaml:4\); did you mean rag\.chunk_tokens"
    ):
        load_config(path)


def test_overrides_apply_on_top_of_a_config_object() -> None:
    base = load_config(None, ["rag.top_k=3", "finetune.lora.target_modules=q,v"])
    config = apply_overrides(base, ["llm.temperature=0.5"])
    assert config.llm.temperature == 0.5 and config.rag.top_k == 3  # the rest of `base` is kept
    assert config == load_config(None, ["rag.top_k=3", "finetune.lora.target_modules=q,v", "llm.temperature=0.5"])
    assert apply_overrides(base, []) is base
    with pytest.raises(ConfigError, match=r"unknown key llm\.modle \(--set llm\.modle=x\)"):
        apply_overrides(base, ["llm.modle=x"])


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key llm\.modle \(--set llm\.modle=x\)"):
        load_config(None, ["llm.modle=x"])


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rag\.top_k \(.*:2\): should be int, got 'many'"):
        load_config(write(tmp_path, "rag:\n  top_k: many\n"))
    with pytest.raises(ConfigError, match="should be int, got True"):
        load_config(None, ["rag.top_k=true"])


def test_choice_and_range_errors() -> None:
    with pytest.raises(ConfigError, match="mode.*should be one of base, rag, finetune, hybrid, got 'both'"):
        load_config(None, ["mode=both"])
    with pytest.raises(ConfigError, match=r"rag\.chunk_overlap.*below rag\.chunk_tokens \(96\), got 96"):
        load_config(None, ["rag.chunk_overlap=96"])
    with pytest.raises(
        ConfigError, match=r"finetune\.lora\.r: should be positive, got 0 \(--set finetune\.lora\.r=0\)"
    ):
        load_config(None, ["finetune.lora.r=0"])
    with pytest.raises(ConfigError, match=r"finetune\.embedder\.queries.*sentence, keyphrase, lm.*got 'llm'"):
        load_config(None, ["finetune.embedder.queries=llm"])
    with pytest.raises(ConfigError, match=r"finetune\.embedder\.batch_size: should be at least 2"):
        load_config(None, ["finetune.embedder.batch_size=1"])
    with pytest.raises(ConfigError, match=r"finetune\.embedder\.max_chunks: should be positive or null, got 0"):
        load_config(None, ["finetune.embedder.max_chunks=0"])


def test_section_must_be_a_mapping_and_file_must_parse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rag.*should be a mapping"):
        load_config(write(tmp_path, "rag: 5\n"))
    with pytest.raises(ConfigError, match=r"c\.yaml:3: not valid YAML"):
        load_config(write(tmp_path, "rag:\n  top_k: 3\n bad: [\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["rag.top_k"])


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == Config()


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.mode = "finetune"  # type: ignore[misc]

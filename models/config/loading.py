"""Loading the config: YAML plus `key.sub=value` overrides, each unknown key or wrong type a ConfigError naming it."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from models.config.root import Config
from models.errors import ConfigError


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config, for manifests and `--json` output."""
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML (or the defaults when `path` is None), apply `key.sub=value` overrides, validate."""
    raw: dict[str, Any] = {}
    lines: dict[str, str] = {}
    if path is not None:
        raw, lines = _read_yaml(Path(path))
    lines.update(_set_overrides(raw, overrides))
    return _build(Config, raw, "", lines)


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`key.sub=value` overrides on top of an existing Config, validated as a whole as `--set` is."""
    if not overrides:
        return config
    raw = yaml.safe_load(to_yaml(config))  # the plain values a config file holds (lists, not tuples)
    return _build(Config, raw, "", _set_overrides(raw, overrides))


def _set_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Apply `overrides` to `raw` in place; where each key was set, for error messages."""
    lines: dict[str, str] = {}
    for override in overrides:
        key, value = _parse_override(override)
        _set_dotted(raw, key, value)
        lines[key] = f"--set {override}"
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing --config or drop the flag") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level should be a mapping of sections, got {type(data).__name__}")
    lines: dict[str, str] = {}
    _collect_lines(node, "", path, lines)
    return data, lines


def _collect_lines(node: Any, prefix: str, path: Path, lines: dict[str, str]) -> None:
    """Remember the file:line of every mapping key so errors can point at it."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = f"{path}:{key_node.start_mark.line + 1}"
            _collect_lines(value_node, key + ".", path, lines)


def _parse_override(override: str) -> tuple[str, Any]:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, for example --set rag.top_k=8")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _where(lines: dict[str, str], key: str) -> str:
    return f" ({lines[key]})" if key in lines else ""


def _build(cls: type, data: Any, prefix: str, lines: dict[str, str]) -> Any:
    section = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{section}{_where(lines, prefix.rstrip('.'))}: should be a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {key}{_where(lines, key)}{hint}")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, key + ".", lines)
        else:
            kwargs[name] = _coerce(value, kind, key, lines)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        raise ConfigError(f"{exc}{_where(lines, key)}") from None


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, kind: Any, key: str, lines: dict[str, str]) -> Any:
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _coerce(value, others[0], key, lines)
    if origin is Literal:
        if value is False and "off" in args:  # YAML 1.1 (PyYAML) reads a bare `off` as false
            value = "off"
        if value not in args:
            raise ConfigError(f"{key}{_where(lines, key)}: should be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}{_where(lines, key)}: should be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", lines) for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads 1e-3 and 2E5 as strings: it wants a dot in the mantissa, as in 1.0e-3.
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}{_where(lines, key)}: should be {kind.__name__}, got {value!r}")
    return value

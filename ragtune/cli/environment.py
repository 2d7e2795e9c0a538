"""`ragtune models ...` and `ragtune config show`: the packaged models on this machine and the config in force."""

from __future__ import annotations

import argparse

from models.config import Config, to_yaml
from models.errors import RagtuneError
from ragtune.cli.common import Subcommands, add_command, add_group


def add_models_parser(sub: Subcommands) -> None:
    models = add_group(sub, "models", help="packaged models: list, prepare once, verify")
    add_command(models, "list", help="the packaged presets and whether they are installed")
    add_command(
        models,
        "prepare",
        help="prepare the configured LM once now (GGUF assembled and verified; for transformers, dequantised) "
        "and, with embedder.backend=onnx, the embedder's ONNX export (a damaged one is made again)",
    )
    add_command(models, "verify", help="re-hash every materialised model file and embedder ONNX export")


def add_config_parser(sub: Subcommands) -> None:
    config = add_group(sub, "config", help="show the resolved config")
    add_command(config, "show", help="print the config after --config and --set, as YAML")


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    from models.loading import lm_folder, verify_materialised
    from models.paths import cache_home
    from models.presets import PRESETS, piece_paths

    if args.models_command == "list":
        for preset in PRESETS.values():
            try:
                piece_paths(preset)
                state = "installed"
            except RagtuneError:
                state = "missing"
            print(f"{preset.name:30} {preset.kind:9} {state:10} {preset.description}")
        return 0
    if args.models_command == "prepare":
        from models.generate import resolve_backend
        from models.gguf import gguf_file

        llamacpp = resolve_backend(config.llm) == "llamacpp"  # runs the GGUF as it is: nothing to dequantise
        print(gguf_file(config.llm.model) if llamacpp else lm_folder(config.llm.model))
        if config.embedder.backend == "onnx":
            from models.onnx_embedding import prepare_export

            print(prepare_export(config.embedder, repair=True))
        return 0
    found = sorted(p.name for p in (cache_home() / "models").glob("*") if p.is_dir() and not p.name.startswith("."))
    for key in found:
        print(f"ok {verify_materialised(key)}")
    if not found:
        print(f"no materialised models in {cache_home() / 'models'}")
    exports = cache_home() / "embedders-onnx"
    if exports.is_dir():
        from models.onnx_embedding import verify_export

        for folder in sorted(p for p in exports.iterdir() if p.is_dir() and not p.name.startswith(".")):
            print(f"ok {verify_export(folder)}")
    return 0


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    from models.generate import resolve_backend

    print(to_yaml(config), end="")
    print(f"# llm.backend={config.llm.backend} runs on: {resolve_backend(config.llm)}")
    return 0


COMMANDS = {"models": cmd_models, "config": cmd_config}

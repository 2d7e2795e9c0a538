"""`ragtune bundle`: everything an offline machine needs to install ragtune and its models, in one folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.config import Config
from models.presets import PRESETS
from ragtune.cli.common import Subcommands, add_command, add_out

DESCRIPTION = """\
Run on a connected machine, in the environment scripts/setup.sh made. Writes to DIR: wheels/ (every
pinned dependency, torch for --target, llama-cpp-python when installed here, the model packages of the
chosen presets, and ragtune itself), bundle.lock.json (exact versions, sizes and sha256 of every file),
sbom.cdx.json (CycloneDX: package, version, licence, hash, origin) and install.sh. Copy DIR across and run
`bash DIR/install.sh VENV` there: it verifies every file before installing anything, never uses a network,
prepares the models and runs `ragtune doctor`. With --embedder NAME, a trained embedder (verified first)
goes along as embedders/NAME/ and install.sh puts it in the far side's $RAGTUNE_HOME/embedders, verified
again, ready for --set embedder.model=NAME. Re-running with nothing changed rewrites nothing.
"""

EPILOG = """\
examples:
  ragtune bundle -o ragtune-bundle                        # CPU, the configured embedder and LM
  ragtune bundle -o ragtune-bundle --preset smollm2-135m-instruct --preset qwen2.5-coder-0.5b-instruct
  ragtune bundle -o ragtune-cuda --target cuda
  ragtune bundle -o ragtune-bundle --embedder library-minilm   # with an embedder trained on your documents
"""


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "bundle",
        help="one folder that installs ragtune and its models on a machine with no network",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_out(p, "DIR", "the bundle folder (refreshed in place if present)")
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu", help="torch build to carry (default cpu)")
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        choices=list(PRESETS),
        metavar="NAME",
        help=f"a packaged model to carry (repeatable; default: llm.model and embedder.model): {', '.join(PRESETS)}",
    )
    p.add_argument(
        "--embedder",
        action="append",
        default=[],
        metavar="NAME",
        help="a trained embedder to carry (repeatable; `ragtune embedders list` shows them)",
    )
    p.add_argument(
        "--llamacpp",
        choices=("auto", "yes", "no"),
        default="auto",
        help="carry llama-cpp-python (auto: when it is installed here; its wheel comes from pip's wheel cache)",
    )


def chosen_presets(given: list[str], config: Config) -> list[str]:
    """The given presets (default: the configured LM), plus the configured embedder unless one is given."""
    presets = list(dict.fromkeys(given or [m for m in (config.llm.model,) if m in PRESETS]))
    if not any(PRESETS[p].kind == "embedder" for p in presets) and config.embedder.model in PRESETS:
        presets.insert(0, config.embedder.model)
    return presets


def cmd_bundle(args: argparse.Namespace, config: Config) -> int:
    from ragtune.bundle.build import build_bundle

    repo = Path(__file__).resolve().parents[2]
    presets = chosen_presets(args.preset, config)
    result = build_bundle(args.out, repo, args.target, presets, args.llamacpp, embedders=args.embedder)
    print(
        f"bundle {result.out}: {result.files} wheels, {result.bytes / 2**20:.0f} MiB; "
        f"{len(result.fetched)} fetched, {len(result.written)} files written"
        + ("" if result.fetched or result.written else " (nothing changed)")
    )
    print(f"on the far side: bash {result.out}/install.sh VENV")
    for name in result.embedders:
        print(f"trained embedder {name}: installed there into $RAGTUNE_HOME/embedders; use --set embedder.model={name}")
    return 0


COMMANDS = {"bundle": cmd_bundle}

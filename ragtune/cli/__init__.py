"""The `ragtune` command: the parser assembled from one module per command group, and `main`.

index.py        ingest, ask, docs
environment.py  models (the packaged models), config show
finetune.py     train, adapters, data (synth, raft, dataset imports)
embedders.py    embedders (trained on your documents: list, show, rm, export)
compare.py      eval, compare
serve.py        serve
bundle.py       bundle (the offline install)
doctor.py       doctor (the self-check)
common.py       --config/--set and the argparse shapes the modules share
"""

from __future__ import annotations

import argparse
import sys

from models.config import load_config
from models.errors import RagtuneError
from ragtune import __version__
from ragtune.cli import bundle, compare, doctor, embedders, environment, finetune, index, serve

EPILOG = """\
examples:
  ragtune ingest examples/docs
  ragtune ask "How much does a non-resident library card cost?"
  ragtune ask --json "When is the library closed?"
  ragtune ask --set rag.top_k=8 --set llm.model=smollm2-135m-instruct "..."
  ragtune docs list
  ragtune docs rm examples/docs/old-policy.md
  ragtune data synth examples/docs -o train.jsonl
  ragtune train --data train.jsonl --name library-v1 --set finetune.max_steps=60
  ragtune ask --set mode=finetune --set finetune.adapter=library-v1 "..."
  ragtune ask --set mode=hybrid --set finetune.adapter=library-v1 "..."

Data (indexes, adapters, trained embedders) lives in $RAGTUNE_HOME (default ~/.local/share/ragtune);
materialised models in $RAGTUNE_CACHE (default ~/.cache/ragtune). Nothing is downloaded.
"""

# In the order `ragtune --help` lists the commands.
ADD_PARSERS = (
    index.add_parsers,
    environment.add_models_parser,
    finetune.add_parsers,
    embedders.add_parsers,
    compare.add_parsers,
    serve.add_parsers,
    environment.add_config_parser,
    bundle.add_parsers,
    doctor.add_parsers,
)
COMMANDS = {**index.COMMANDS, **environment.COMMANDS, **finetune.COMMANDS, **compare.COMMANDS, **serve.COMMANDS}
COMMANDS.update({**embedders.COMMANDS, **bundle.COMMANDS, **doctor.COMMANDS})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Answer questions about your own documents, offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADD_PARSERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        from ragtune.compose import quiet_libraries

        quiet_libraries()
        return COMMANDS[args.command](args, config)
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragtune: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130

"""`ragtune embedders ...`: list, show, remove or export the embedders trained on your documents."""

from __future__ import annotations

import argparse
import json
from typing import Any

from models.config import Config
from ragtune.cli.common import Subcommands, add_command, add_out

DESCRIPTION = """\
An embedder trained on your documents (`ragtune train --target embedder --docs DIR --name NAME`) lives
under $RAGTUNE_HOME/embedders/NAME: a sentence-transformers folder plus ragtune-embedder.json (its base,
training data, settings, and every file's sha256, verified on each load). Use it by name:
--set embedder.model=NAME, and ingest your documents again with it: vectors from another embedder do not mix."""

EPILOG = """\
examples:
  ragtune embedders list
  ragtune embedders show library-minilm
  ragtune ingest examples/docs --set embedder.model=library-minilm
  ragtune embedders export library-minilm --out /media/usb/library-minilm
  ragtune embedders rm library-minilm
"""


def add_parsers(sub: Subcommands) -> None:
    group = sub.add_parser(
        "embedders",
        help="list, show, remove or export embedders trained on your documents",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="embedders_command", required=True, metavar="ACTION")
    add_command(
        actions,
        "list",
        help="trained embedders with their base, training queries, chunks, steps and date",
        description="One line per trained embedder; a damaged one is listed with its problem and the fix.",
    ).add_argument("--json", action="store_true", help="every manifest as JSON, for scripts")
    add_command(
        actions,
        "show",
        help="a trained embedder's full manifest, after verifying its files",
        description="Prints ragtune-embedder.json: base embedder, training data (folder, chunks, sha256), how the "
        "training queries were made, steps, time, memory, seed, settings and each file's size and sha256.",
    ).add_argument("name")
    add_command(
        actions,
        "rm",
        help="delete a trained embedder (also how a damaged one is cleared)",
        description="Deletes $RAGTUNE_HOME/embedders/NAME. A config with embedder.model=NAME stops loading until "
        "you train NAME again or set another embedder.model (and ingest again with it).",
    ).add_argument("name")
    p = add_command(
        actions,
        "export",
        help="copy a trained embedder out as a plain sentence-transformers folder, e.g. for another machine",
        description="Writes the verified files (without ragtune's manifest) into a new, empty folder, checks the "
        "copy, then prints the setting that uses it: --set embedder.model=DIR, on this machine or any other. "
        "Plain sentence-transformers loads it too: SentenceTransformer(DIR).",
    )
    p.add_argument("name")
    add_out(p, "DIR", "new, empty output folder")


def cmd_embedders(args: argparse.Namespace, config: Config) -> int:
    from models.trained_embedders import list_trained_embedders, read_trained_embedder

    action = args.embedders_command
    if action == "list":
        found = list_trained_embedders()
        if args.json:
            rows = [{"name": e.name, "path": str(e.path), "problem": e.problem, **e.manifest} for e in found]
            print(json.dumps(rows, indent=2))
            return 0
        for e in found:
            print(f"{e.name:24} {_summary(e.manifest) if e.problem is None else 'DAMAGED: ' + e.problem}")
        if not found:
            print("no trained embedders yet; train one with `ragtune train --target embedder --docs DIR --name NAME`")
        return 0
    if action == "show":
        print(json.dumps(read_trained_embedder(args.name).manifest, indent=2))
        return 0
    from finetune.embedder_store import export_trained_embedder, remove_trained_embedder

    if action == "rm":
        print(f"removed {remove_trained_embedder(args.name)}")
        return 0
    folder = export_trained_embedder(args.name, args.out)
    print(f"exported {folder}")
    print(f"use it: --set embedder.model={folder}")
    return 0


def _summary(manifest: dict[str, Any]) -> str:
    queries = manifest.get("queries")
    method = queries.get("method", "?") if isinstance(queries, dict) else queries or "?"
    data = manifest.get("data")
    chunks = data.get("chunks", "?") if isinstance(data, dict) else "?"
    return (
        f"base={manifest.get('base', '?')} queries={method} chunks={chunks} "
        f"steps={manifest.get('steps', '?')} created={manifest.get('created', '?')}"
    )


COMMANDS = {"embedders": cmd_embedders}

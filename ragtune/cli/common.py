"""What every command module shares: the --config/--set options, the argparse shapes they repeat, path display."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from models.text import printable

# The type argparse gives `add_subparsers()`; private in name, but the only handle there is.
Subcommands = argparse._SubParsersAction


def common_options() -> argparse.ArgumentParser:
    """--config and --set, which every command that reads the config takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="YAML",
        # Read when the parser is built, so a test or a wrapper script can set it just before.
        default=os.environ.get("RAGTUNE_CONFIG"),
        help="config file (default: $RAGTUNE_CONFIG, else built-in defaults = configs/default.yaml)",
    )
    common.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set rag.top_k=8 (repeatable)",
    )
    return common


def add_command(
    sub: Subcommands, name: str, help: str, description: str | None = None, **kwargs: object
) -> argparse.ArgumentParser:
    """A command (or a group's action) that takes --config and --set."""
    return sub.add_parser(name, parents=[common_options()], help=help, description=description, **kwargs)


def add_group(sub: Subcommands, name: str, help: str) -> Subcommands:
    """A command made of actions (`docs list`, `adapters rm`, ...); the action lands in args.NAME_command."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def add_paths(parser: argparse.ArgumentParser, help: str) -> None:
    """The documents a command reads or removes: one or more files or folders."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help=help)


def add_out(parser: argparse.ArgumentParser, metavar: str, help: str, required: bool = True) -> None:
    parser.add_argument("-o", "--out", required=required, type=Path, metavar=metavar, help=help)


def add_sample(parser: argparse.ArgumentParser, recorded_in: str) -> None:
    """--limit and --seed: a seeded sample of the question set, as eval and compare take it."""
    parser.add_argument("--limit", type=int, help=f"a seeded sample of N questions (recorded in {recorded_in})")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")


def relative(path: str) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def display(path: str) -> str:
    """`relative(path)` for a terminal: control characters in a file name are shown escaped."""
    return printable(relative(path))

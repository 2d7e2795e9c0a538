#!/usr/bin/env python3
"""Train an adapter from a script: `python scripts/train_adapter.py --data FILE --name NAME [--set ...]`.

Also runs under `accelerate launch --num_processes N scripts/train_adapter.py ...` (one adapter, written
by the main process). Exit code 0 on success, 2 on a ragtune error with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import load_config  # noqa: E402
from models.errors import RagtuneError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--data", required=True, type=Path, help="training file")
    parser.add_argument("--name", required=True, help="adapter name")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    args = parser.parse_args()
    try:
        from finetune.train import train
        from ragtune.compose import quiet_libraries

        quiet_libraries()
        result = train(load_config(args.config, args.overrides), args.data, args.name, resume=args.resume)
    except RagtuneError as exc:
        print(f"train_adapter: error: {exc}", file=sys.stderr)
        return 2
    if result.path != Path():
        print(f"adapter {result.name}: {result.steps} steps, train loss {result.train_loss:.4f} -> {result.path}")
    return 0


def leave(code: int) -> None:
    """Exit with `code`. Under a launch of several processes, skip the interpreter's teardown once the adapter is
    written and the process group left: a collective library's threads (gloo, DeepSpeed) destroyed there can abort
    the process ("terminate called without an active exception") and turn a finished run into a failed one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    leave(main())

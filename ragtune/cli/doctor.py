"""`ragtune doctor`: one line per check (ok / warn / fail, with the fix); non-zero exit on any fail."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from models.config import Config
from ragtune.cli.common import Subcommands, add_command


def add_parsers(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "doctor",
        help="check this installation: versions, engine, models (sha256), index, disk, memory, threads, GPU, key",
        description="Run after an install or when something is off. Each line is ok, warn or fail; warn and fail "
        "say how to fix it. The exit status is 1 when any check fails.",
    )
    p.add_argument("--json", action="store_true", help="print the checks as a JSON list")


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from ragtune.doctor import run_checks

    checks = run_checks(config)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for check in checks:
            print(f"{check.status:4}  {check.name:14} {check.detail}")
            if check.fix:
                print(f"{'':20}fix: {check.fix}")
    failed = sum(c.status == "fail" for c in checks)
    if not args.json:
        warned = sum(c.status == "warn" for c in checks)
        print(f"doctor: {len(checks)} checks, {failed} failed, {warned} warnings")
    return 1 if failed else 0


COMMANDS = {"doctor": cmd_doctor}

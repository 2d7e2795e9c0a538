"""Importing the shared layer sets how OpenMP threads wait, unless the user already chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRINT = "import os, models; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"


def waits_after_import(**chosen: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | chosen
    done = subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("chosen", "seen"),
    [
        ({}, "None 300"),  # nothing chosen: a short spin, then sleep
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE None"),  # the user's policy alone decides
        ({"OMP_WAIT_POLICY": "active"}, "active None"),
        ({"GOMP_SPINCOUNT": "5000"}, "None 5000"),
    ],
)
def test_a_short_spin_unless_the_user_chose(chosen: dict[str, str], seen: str) -> None:
    assert waits_after_import(**chosen) == seen

#!/usr/bin/env python
"""The default LM's own evidence on each calibration draft (likelihoods and a judge), for bench/support_checks.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support_signals import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Every support rule scored on the calibration drafts (and a trade-off curve); see bench/support_checks.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support_checks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

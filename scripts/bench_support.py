#!/usr/bin/env python
"""The support check's calibration set from squad-long, answered and every rule measured; see bench/support_set.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support_set import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

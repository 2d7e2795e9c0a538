#!/usr/bin/env python
"""Two answer folders of the same questions side by side; see ragtune/compare/paired_runs.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragtune.compare.paired_runs import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

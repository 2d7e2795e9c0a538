#!/usr/bin/env python
"""The question side of the support check on every calibration question; see bench/support_questions.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support_questions import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

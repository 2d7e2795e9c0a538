#!/usr/bin/env python
"""The refusal sentence in the prompt on one worked case (a kiln manual); see bench/refusal_case.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.refusal_case import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

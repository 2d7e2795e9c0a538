#!/usr/bin/env python
"""The embedder trained on a corpus's own documents against the packaged one; see bench/embedder_tuning.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.embedder_tuning import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Follow-up questions from squad-long retrieved as asked, by rules and by the LM; see bench/followups.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.followups import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""Short renderings of user-supplied values for error messages."""

from __future__ import annotations

import json
from typing import Any


def show(value: Any, limit: int = 60) -> str:
    """`value` as JSON, cut to `limit` characters: a bad record is named without flooding the terminal."""
    return json.dumps(value, ensure_ascii=False)[:limit]

"""Renderings of user-supplied values (names, records) fit for error messages and terminals."""

from __future__ import annotations

import json
import unicodedata
from typing import Any


def show(value: Any, limit: int = 60) -> str:
    """`value` as JSON, cut to `limit` characters: a bad record is named without flooding the terminal."""
    return json.dumps(value, ensure_ascii=False)[:limit]


def printable(text: str) -> str:
    """`text` with control and format characters escaped (a file name holding a newline or a terminal
    escape sequence would otherwise forge output lines or drive the terminal)."""
    return "".join(_escape(ch) if unicodedata.category(ch)[0] == "C" else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

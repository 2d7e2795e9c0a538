"""GGUF files written by tests with the gguf package."""

from __future__ import annotations

from typing import Any


def write_out(writer: Any) -> None:
    """Write a `gguf.GGUFWriter`'s header, metadata and tensors to its file, in the package's order, and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

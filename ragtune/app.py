"""Transitional: the composition moved to ragtune/compose.py."""

from ragtune.compose import build_generator, quiet_libraries, require_adapter  # noqa: F401

"""Typed errors: each carries the bad value and the way to fix it, so entry points print one line."""

from __future__ import annotations


class RagtuneError(Exception):
    """Base of every error ragtune raises on purpose; the CLI prints it as one line."""


class ConfigError(RagtuneError):
    """A config file, a `--set` override or an environment variable holds a bad value."""


class ModelError(RagtuneError):
    """A model cannot be found, verified or loaded."""


class RemoteModelError(ModelError):
    """The model server at llm.base_url or embedder.base_url is down, too slow or failing: not the request's fault."""


class AdapterError(ModelError):
    """An adapter cannot be used: damaged, unsafe (pickle files) or trained on another base model."""


class InputError(RagtuneError):
    """A user-supplied file or path is unusable (missing, outside the roots, unreadable)."""


class IndexStateError(RagtuneError):
    """Base of the index problems: missing, corrupt, unavailable or locked by a writer."""


class IndexMissingError(IndexStateError):
    """No index has been built yet for the configured name."""


class IndexCorruptError(IndexStateError):
    """An index file does not match its manifest (size, hash, dimension)."""


class IndexUnavailableError(IndexStateError):
    """The engine at index.uri (a Milvus server, or Milvus Lite) is down, unreachable or refused a call."""


class IndexLockedError(IndexStateError):
    """Another process is writing the same index."""

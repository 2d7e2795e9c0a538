"""The Milvus connection behind index.uri: one shared client per address, every call's failure a typed error.

A server that goes down, or a call the engine refuses, raises IndexUnavailableError naming index.uri (an
index problem: `ragtune serve` answers 503), never a pymilvus or gRPC traceback.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from models.config import IndexConfig

# IndexUnavailableError lives with the other typed errors: `serve` tells it from a damaged index without pymilvus.
from models.errors import ConfigError, IndexUnavailableError
from rag.index import missing_library

try:
    from pymilvus import MilvusClient, MilvusException
except ImportError as exc:  # only a config that chooses index.backend=milvus gets here
    raise missing_library("milvus", "'ragtune[milvus]' (pymilvus==3.0.2 milvus-lite==3.2.2)") from exc

# pymilvus logs every failed call before raising it; the typed errors below already say what failed.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
# Milvus Lite serves gRPC in this process and logs a traceback for the one call it lacks (AllocTimestamp,
# which pymilvus's wait for a new collection's index tries first and then does without).
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)

_CLIENTS: dict[tuple[str, str], MilvusClient] = {}  # one connection per uri and token, shared by every index
# Serve threads connect at once: two clients on one Milvus Lite file would each start a server on it.
_LOCK = threading.Lock()


def alias_name(index_name: str) -> str:
    """The alias serving index `index_name`: Milvus names allow [A-Za-z0-9_], so a hash keeps `a-b` and `a_b` apart."""
    slug = re.sub(r"\W", "_", index_name, flags=re.ASCII)[:80]
    return f"ragtune_{slug}_{hashlib.sha256(index_name.encode()).hexdigest()[:8]}"


def collection_name(index_name: str, generation: str) -> str:
    """The collection holding `generation` (gen-000007) of index `index_name`."""
    return f"{alias_name(index_name)}__{generation.replace('-', '_')}"


@contextmanager
def engine_errors(uri: str | None) -> Iterator[None]:
    """Turn a failing Milvus call inside the block into IndexUnavailableError naming index.uri."""
    try:
        yield
    except MilvusException as exc:
        raise _unavailable(uri, exc.message) from None
    except grpc.RpcError as exc:
        raise _unavailable(uri, str(exc.details() if hasattr(exc, "details") else exc)) from None


def _unavailable(uri: str | None, reason: str) -> IndexUnavailableError:
    return IndexUnavailableError(
        f"index.uri={uri}: the Milvus call failed ({reason}); check that the server is up and reachable "
        "(a local .db file is open to one process at a time), then retry"
    )


class Engine:
    """A MilvusClient whose every call goes through `engine_errors` (attributes are the client's own)."""

    def __init__(self, client: MilvusClient, uri: str | None) -> None:
        self._client, self.uri = client, uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            with engine_errors(self.uri):
                return attribute(*args, **kwargs)

        return guarded

    def guard(self) -> Any:
        """For what the client hands back and calls later (a query iterator's pages)."""
        return engine_errors(self.uri)


def connect(config: IndexConfig) -> Engine:
    """The client for index.uri, connected now so that a wrong address fails before anything is written."""
    uri = _address(config)
    key = (uri, _token(config.token_file))
    with _LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = _open(config, *key)
        return Engine(_CLIENTS[key], config.uri)


def _open(config: IndexConfig, uri: str, token: str) -> MilvusClient:
    try:
        if uri.endswith(".db"):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"index.uri={config.uri}: cannot make the folder for the Milvus Lite file ({exc.strerror}: "
            f"{exc.filename}); set index.uri to a .db path in a folder you can write, or a server address"
        ) from None
    try:
        # No call timeout: loading a large collection on a server can take minutes (connecting fails fast).
        return MilvusClient(uri=uri, token=token)
    except MilvusException as exc:
        raise ConfigError(
            f"index.uri={config.uri}: Milvus cannot be reached or opened ({exc.message}); start the server or "
            "fix index.uri and index.token_file (a local .db file is open to one process at a time)"
        ) from None


def disconnect(config: IndexConfig) -> None:
    """Close index.uri's client: a Milvus Lite file is then free for another process to open."""
    address = _address(config)
    with _LOCK:
        for key in [key for key in _CLIENTS if key[0] == address]:
            _CLIENTS.pop(key).close()
    if address.endswith(".db"):  # pymilvus leaves Milvus Lite's in-process server holding the file
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(address)


def aliased(client: Engine, alias: str) -> str | None:
    """The collection `alias` names, or None where there is no such alias yet."""
    # Listed first: describing a missing alias fails like an unreachable server does.
    listed = client.list_aliases()  # {"aliases": [...], ...}; typed as a list in pymilvus, so either is read
    if alias not in (listed.get("aliases", []) if isinstance(listed, dict) else listed):
        return None
    return client.describe_alias(alias)["collection_name"]


def generation_numbers(client: Engine, index_name: str) -> dict[int, str]:
    """The generation collections the engine holds for `index_name`, by number."""
    prefix = alias_name(index_name) + "__gen_"
    names = client.list_collections()
    return {int(n[len(prefix) :]): n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()}


def _address(config: IndexConfig) -> str:
    return str(Path(config.uri).expanduser()) if config.uri and config.uri.endswith(".db") else config.uri or ""


def _token(token_file: str | None) -> str:
    if token_file is None:
        return ""
    path = Path(token_file).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"index.token_file={token_file}: cannot be read ({exc}); point it at the token's file"
        ) from None

"""index.backend names, the registries that resolve them (vector indexes, generation stores), and the contract
suites that cover each one."""

import sys
import typing
from pathlib import Path

import pytest

from models.config import IndexBackend, IndexConfig
from models.errors import ConfigError
from rag.generations import GENERATION_STORES, GenerationStore, generation_store
from rag.index import INDEX_BACKENDS, VectorIndex, create_index, index_class, manifest_section
from tests.contract.test_generation_store import BACKENDS as STORE_BACKENDS
from tests.contract.test_vector_index import BACKENDS


def test_registry_matches_the_config_and_the_contract_suite() -> None:
    assert set(INDEX_BACKENDS) == set(typing.get_args(IndexBackend)) == set(BACKENDS)


@pytest.mark.parametrize("backend", sorted(INDEX_BACKENDS))
def test_each_entry_is_a_vector_index(backend: str, tmp_path: Path) -> None:
    cls = index_class(backend)
    assert issubclass(cls, VectorIndex) and not getattr(cls, "__abstractmethods__", None)
    uri = str(tmp_path / "index.db") if backend == "milvus" else None  # milvus needs an engine to connect to
    assert isinstance(create_index(IndexConfig(backend=backend, uri=uri), dim=4), cls)


def test_every_backend_has_a_generation_store_covered_by_its_contract_suite() -> None:
    assert set(GENERATION_STORES) == set(INDEX_BACKENDS) == set(STORE_BACKENDS)


@pytest.mark.parametrize("backend", sorted(GENERATION_STORES))
def test_each_store_entry_is_a_generation_store(backend: str) -> None:
    uri = "unused.db" if backend == "milvus" else None
    store = generation_store(IndexConfig(backend=backend, uri=uri))  # built without connecting to anything
    assert isinstance(store, GenerationStore) and not getattr(type(store), "__abstractmethods__", None)


def test_unknown_backend_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"index.backend: unknown backend 'faiss'; choose one of hnswlib, milvus"):
        index_class("faiss")
    with pytest.raises(ConfigError, match=r"index.backend: unknown backend 'faiss'; choose one of hnswlib, milvus"):
        generation_store(IndexConfig(backend="faiss"))  # type: ignore[arg-type]


def test_missing_library_fails_only_when_chosen_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hnswlib", None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, "rag.index.hnswlib", raising=False)
    with pytest.raises(ConfigError, match=r"index.backend=hnswlib needs .*`pip install hnswlib==0.8.0`"):
        index_class("hnswlib")


def test_manifest_without_an_index_section_is_hnswlib() -> None:
    """Format-1 manifests written before index.backend existed; their indexes must keep opening."""
    assert manifest_section({"format": 1, "m": 16, "ef_construction": 200})["backend"] == "hnswlib"
    section = {"backend": "hnswlib", "files": ["vectors.hnsw"], "m": 8}
    assert manifest_section({"format": 1, "index": section}) is section

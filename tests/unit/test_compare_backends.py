"""compare and eval name the engines that ran: index.backend and llm.backend, with where they were."""

from __future__ import annotations

from models.config import load_config
from models.generate import resolve_backend
from ragtune.compare.report import _scope
from ragtune.compare.results import backends


def test_backends_name_the_engines_and_their_addresses() -> None:
    assert backends(load_config(None, ["llm.backend=transformers"])) == {"index": "hnswlib", "llm": "transformers"}
    auto = load_config(None, [])  # the default: the engine auto chose on this machine, and that it was auto
    assert backends(auto)["llm"] == f"{resolve_backend(auto.llm)} (llm.backend=auto)"
    remote = load_config(
        None,
        ["index.backend=milvus", "index.uri=http://milvus:19530", "llm.backend=openai",
         "llm.base_url=http://gpu:8000/v1"],
    )  # fmt: skip
    assert backends(remote) == {"index": "milvus (http://milvus:19530)", "llm": "openai (http://gpu:8000/v1)"}


def test_the_report_says_which_backends_ran() -> None:
    results = {
        "questions": {"file": "q.jsonl", "asked": 3, "limit": None, "seed": 0},
        "docs": {"folder": "docs"},
        "backends": {"index": "milvus (m.db)", "llm": "transformers"},
    }
    assert _scope(results).endswith("documents: docs. Backends: index milvus (m.db), llm transformers.")

"""Lexical, hybrid, contextual and reranked retrieval end to end, with the real embedder."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from models.config import load_config
from models.errors import ConfigError, IndexMissingError, ModelError
from models.loading import embedder_folder
from models.paths import index_dir
from models.storage import describe_files
from rag.chunk import with_context
from rag.collection import current_generation, expectation, open_snapshot
from rag.ingest import ingest
from rag.retrieve import build_retriever

# A long service manual whose tightening sections read like the question; the one section that names
# the code asked about is a shipping note, so embedding similarity ranks it below them.
SECTIONS = [
    ("Wheel hub bolts", "Tighten the wheel hub bolts QZ-17.3 to 120 newton metres in a star pattern, then again."),
    (
        "Cylinder head screws",
        "Cylinder head screws RB-8.1 are tightened in three passes: 20 Nm, 40 Nm, then 90 degrees.",
    ),
    ("Spark plugs", "Spark plugs TL-3.9 go in by hand first and are then tightened to 25 Nm with a calibrated wrench."),
    ("Oil drain plug", "The oil drain plug MP-5.5 takes 30 Nm; over-tightening it strips the threads of the sump."),
    ("Brake caliper bolts", "Brake caliper bolts VN-2.4 are tightened to 85 Nm and secured with thread locker."),
    ("Shipping notes", "Crate 9 holds clamp XK-42.7 and spare gaskets; the clamp is set to 18 Nm before it ships."),
    ("Warranty", "Parts fitted by an approved workshop carry a two-year warranty from the date of fitting."),
]
QUESTION = "What torque does the XK-42.7 fastener need?"


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "\n\n".join(f"## {heading}\n{text}" for heading, text in SECTIONS)
    (folder / "service-manual.md").write_text(f"# Service manual\n\n{body}\n")
    (folder / "library.txt").write_text(
        "The library opens at nine and closes at eight. Cards are free for residents.\n"
    )
    return folder


def retrieve(config, embedder, question: str = QUESTION):
    return build_retriever(index_dir(config), config, embedder).retrieve(question)


def config_for(kind: str, *more: str):
    return load_config(None, [f"rag.retriever={kind}", *more])


def test_a_rare_code_that_dense_misses_is_found_by_lexical_and_hybrid(tmp_path: Path, embedder) -> None:
    """With the default top_k (3) and min_score (0.2): the passage holding XK-42.7 is not in dense's top 3."""
    ingest([write_docs(tmp_path / "docs")], config_for("dense"), embedder, progress=False)
    dense = retrieve(config_for("dense"), embedder)
    assert len(dense.sources) == 3 and not any("XK-42.7" in s.text for s in dense.sources)
    for kind in ("lexical", "hybrid"):
        found = retrieve(config_for(kind), embedder).sources
        assert "XK-42.7" in found[0].text, kind
        assert found[0].scores["dense"] >= 0.2 and found[0].scores["lexical"] > 0
    fused = retrieve(config_for("hybrid"), embedder).sources
    assert {"dense", "lexical", "fused"} <= set(fused[0].scores) and fused[0].score == fused[0].scores["fused"]
    weighted = retrieve(config_for("hybrid", "rag.hybrid.method=weighted"), embedder).sources
    assert "XK-42.7" in weighted[0].text


def test_ingest_keeps_the_lexical_index_in_step_with_adds_changes_and_deletes(tmp_path: Path, embedder) -> None:
    docs = write_docs(tmp_path / "docs")
    config = config_for("lexical", "rag.min_score=-1")
    ingest([docs], config, embedder, progress=False)
    manual = docs / "service-manual.md"
    manual.write_text(manual.read_text().replace("XK-42.7", "XK-99.1"))
    (docs / "library.txt").unlink()
    (docs / "new.txt").write_text("Pump ZP-5.5 is primed with two litres of water.\n")
    summary = ingest([docs], config, embedder, progress=False)
    assert (len(summary.updated), len(summary.removed), len(summary.added)) == (1, 1, 1)
    snapshot = open_snapshot(index_dir(config), expectation(config, embedder.dim))
    assert snapshot.manifest["lexical"]["rows"] == snapshot.store.lexical_rows() == snapshot.index.count
    assert retrieve(config, embedder, "XK-42.7").sources == []
    assert "XK-99.1" in retrieve(config, embedder, "XK-99.1").sources[0].text
    assert Path(retrieve(config, embedder, "ZP-5.5").sources[0].path).name == "new.txt"
    assert retrieve(config, embedder, "residents").sources == []


def test_chunks_are_embedded_and_indexed_with_their_context_but_shown_without(tmp_path: Path, embedder) -> None:
    config = config_for("lexical", "rag.min_score=-1", "rag.contextual=true")
    ingest([write_docs(tmp_path / "docs")], config, embedder, progress=False)
    snapshot = open_snapshot(index_dir(config), expectation(config, embedder.dim))
    assert snapshot.manifest["contextual"] is True
    chunks = list(snapshot.store.chunks(snapshot.store.live_ids()).values())
    [shipping] = [c for c in chunks if "XK-42.7" in c.text]
    assert shipping.context == "service manual > Service manual > Shipping notes"
    assert shipping.text.startswith("## Shipping notes\nCrate 9")
    stored = snapshot.index.vectors([shipping.id])[0]
    assert float(stored @ embedder.encode([with_context(shipping.context, shipping.text)])[0]) > 0.999
    [source] = retrieve(config, embedder, "XK-42.7").sources
    assert source.text == shipping.text and "service manual >" not in source.text
    assert [s.text for s in retrieve(config, embedder, "Shipping notes").sources][0] == shipping.text


def test_plain_chunks_when_contextual_is_off_and_no_silent_mix(tmp_path: Path, embedder) -> None:
    docs = write_docs(tmp_path / "docs")
    plain = config_for("dense", "rag.contextual=false")
    ingest([docs], plain, embedder, progress=False)
    snapshot = open_snapshot(index_dir(plain), expectation(plain, embedder.dim))
    assert snapshot.manifest["contextual"] is False
    assert {c.context for c in snapshot.store.chunks(snapshot.store.live_ids()).values()} == {""}
    (docs / "more.txt").write_text("Another note.\n")
    message = r"built with rag.contextual=false but rag.contextual is true; set rag.contextual=false or rebuild"
    contextual = config_for("dense", "rag.contextual=true")
    with pytest.raises(ConfigError, match=message):
        ingest([docs], contextual, embedder, progress=False)
    assert ingest([docs], contextual, embedder, rebuild=True, progress=False).generation is not None


def make_legacy(root: Path) -> None:
    """Turn the current generation into what earlier versions wrote: no context column, no lexical index."""
    folder = root / current_generation(root)
    db = sqlite3.connect(folder / "chunks.sqlite")
    db.execute("DROP TABLE chunks_fts")
    db.execute("ALTER TABLE chunks DROP COLUMN context")
    db.execute("DELETE FROM meta WHERE key = 'generation'")
    db.commit()
    db.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["lexical"], manifest["contextual"]
    manifest["files"] = describe_files(folder, list(manifest["files"]))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_index_from_before_the_lexical_index_is_upgraded_by_the_next_ingest(tmp_path: Path, embedder) -> None:
    docs = write_docs(tmp_path / "docs")
    plain = ["rag.contextual=false", "rag.min_score=-1"]
    ingest([docs], config_for("dense", *plain), embedder, progress=False)
    root = index_dir(config_for("dense"))
    make_legacy(root)
    assert retrieve(config_for("dense", *plain), embedder).sources  # dense keeps working on it as it is
    lexical = config_for("lexical", *plain)
    with pytest.raises(IndexMissingError, match=r"has no lexical index.*run `ragtune ingest DOCS` once to add it"):
        build_retriever(root, lexical, embedder).check()
    with pytest.raises(ConfigError, match="built with rag.contextual=false"):  # its chunks carry no context
        ingest([docs], config_for("lexical", "rag.contextual=true"), embedder, progress=False)
    before = current_generation(root)
    summary = ingest([docs], lexical, embedder, progress=False)
    assert summary.chunks == 0 and summary.generation not in (None, before)  # nothing re-embedded
    assert "XK-42.7" in retrieve(lexical, embedder).sources[0].text
    snapshot = open_snapshot(root, expectation(lexical, embedder.dim))
    assert snapshot.manifest["lexical"]["rows"] == snapshot.index.count and snapshot.manifest["contextual"] is False


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_cross_encoder import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


def test_rerank_orders_the_candidates_by_the_cross_encoder_and_times_it(
    tmp_path: Path, embedder, cross_encoder: Path
) -> None:
    from sentence_transformers import CrossEncoder

    first = config_for("hybrid", "rag.min_score=-1", "rag.top_k=5")
    ingest([write_docs(tmp_path / "docs")], first, embedder, progress=False)
    candidates = retrieve(first, embedder).sources
    reranked = config_for("hybrid", "rag.min_score=-1", f"rag.rerank.model={cross_encoder}", "rag.rerank.candidates=5")
    result = retrieve(reranked, embedder)
    snapshot = open_snapshot(index_dir(first), expectation(first, embedder.dim))
    stored = {(c.path, c.ordinal): c for c in snapshot.store.chunks(snapshot.store.live_ids()).values()}
    texts = [stored[(s.path, s.chunk)].indexed_text for s in candidates]
    model = CrossEncoder(str(cross_encoder), device="cpu")
    expected = np.asarray(model.predict([(QUESTION, text) for text in texts]))
    order = [(candidates[n].path, candidates[n].chunk) for n in np.argsort(-expected, kind="stable")[:3]]
    assert [(s.path, s.chunk) for s in result.sources] == order
    assert np.diff(np.sort(expected)).min() > 1e-4  # distinct scores: the order is not luck
    for source in result.sources:
        assert source.score == source.scores["rerank"] and {"dense", "lexical", "fused"} <= set(source.scores)
    assert result.timings["rerank_s"] > 0 and "search_s" in result.timings


def test_a_reranker_folder_that_is_not_a_cross_encoder_fails_before_any_answer(
    tmp_path: Path, embedder, cross_encoder: Path
) -> None:
    ingest([write_docs(tmp_path / "docs")], config_for("dense"), embedder, progress=False)

    def build(model: str):
        return build_retriever(
            index_dir(config_for("dense")), config_for("dense", f"rag.rerank.model={model}"), embedder
        )

    with pytest.raises(ModelError, match=r"rag.rerank.model=.* is not a cross-encoder .*BertModel"):
        build(str(embedder_folder("minilm-l6")))
    with pytest.raises(ConfigError, match=r"rag.rerank.model='/no/such/folder': no such folder"):
        build("/no/such/folder")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((cross_encoder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02not really")
    with pytest.raises(ModelError, match=r"rag.rerank.model=.*holds no .safetensors weights"):
        build(str(pickled))

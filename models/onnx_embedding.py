"""embedder.backend=onnx: the embedder exported once to ONNX under RAGTUNE_CACHE, verified, and run by onnxruntime.

The whole sentence-transformers pipeline after the tokenizer (transformer, pooling, normalisation) becomes one
ONNX graph; the tokenizer is saved beside it. The export is written into a staged folder with a manifest of sizes
and sha256, published by one rename, and re-hashed on every load: a damaged file would otherwise give wrong
vectors silently, and a wrong vector in an index is found much later, if ever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.config import EmbedderConfig
from models.errors import IndexCorruptError, ModelError
from models.loading import embedder_folder
from models.paths import cache_home
from models.presets import get_preset
from models.storage import (
    atomic_write_json,
    describe_files,
    file_lock,
    publish_dir,
    read_json,
    staged_dir,
    verify_files,
)

MANIFEST = "ragtune-manifest.json"
SETTINGS = "ragtune-onnx.json"
# Part of every export's folder name: a change to how exports are made gives them new folders.
EXPORT_FORMAT = 1
_OPSET = 17
_INSTALL = "pip install 'ragtune[onnx]' (onnxruntime and onnx)"


def export_dir(config: EmbedderConfig) -> Path:
    """`$RAGTUNE_CACHE/embedders-onnx/NAME-VARIANT-FINGERPRINT` for embedder.model and embedder.quantize."""
    source = embedder_folder(config.model)
    name = config.model if get_preset(config.model, "embedder") is not None else source.name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "embedder"
    variant = "fp32" if config.quantize == "none" else config.quantize
    return cache_home() / "embedders-onnx" / f"{name}-{variant}-{source_fingerprint(source, config.quantize)}"


def source_fingerprint(source: Path, quantize: str) -> str:
    """16 hex digits over the source folder's file names, sizes and modification times.

    Stat data, not content, so a load need not read the source weights (it hashes the export's files instead);
    saving a model again into the same folder (a fine-tuned embedder) changes the times, so it gets a new export.
    """
    files = sorted(p for p in source.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    payload = json.dumps({"format": EXPORT_FORMAT, "quantize": quantize, "files": stats})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_export(config: EmbedderConfig, repair: bool = False, progress: bool = True) -> Path:
    """The verified export for `config`, made now when missing; with `repair`, a damaged one is made again."""
    final = export_dir(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    # One process exports; another asking meanwhile waits, then uses the result.
    with file_lock(final.parent / f".{final.name}.lock"):
        if (final / MANIFEST).is_file():
            try:
                return verify_export(final)
            except ModelError:
                if not repair:
                    raise
        if progress:
            print(f"ragtune: exporting embedder {config.model!r} to ONNX once, into {final}...", file=sys.stderr)
        _export(config, final)
    return final


def verify_export(folder: Path) -> Path:
    """Re-hash every file of an export against its manifest; a mismatch is a ModelError naming the fix."""
    try:
        verify_files(folder, read_json(folder / MANIFEST, "embedder export manifest")["files"], hashes=True)
    except (IndexCorruptError, KeyError, TypeError) as exc:
        detail = str(exc).split("; rebuild it")[0]
        raise ModelError(
            f"the ONNX export of the embedder in {folder} is damaged ({detail}); "
            "run `ragtune models prepare` to export it again"
        ) from None
    return folder


def _export(config: EmbedderConfig, final: Path) -> None:
    _require_onnx()
    source = embedder_folder(config.model)
    with staged_dir(final.parent, final.name) as staging:
        started = time.perf_counter()
        settings = _export_graph(config, source, staging / "model.onnx")
        if config.quantize == "int8":
            _quantise(staging / "model.onnx", staging / "model-int8.onnx")
            (staging / "model.onnx").unlink()
            settings["model_file"] = "model-int8.onnx"
        atomic_write_json(staging / SETTINGS, settings)
        names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        manifest = {
            "source": str(source),
            "quantize": config.quantize,
            "files": describe_files(staging, names),
            "seconds": round(time.perf_counter() - started, 1),
        }
        atomic_write_json(staging / MANIFEST, manifest)
        publish_dir(staging, final, replace=True)


def _export_graph(config: EmbedderConfig, source: Path, target: Path) -> dict[str, Any]:
    """Trace the sentence-transformers pipeline into `target`; save its tokenizer beside it; return its settings."""
    import onnx
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(source), device="cpu", local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"embedder.model={config.model!r}: cannot load {source}: {exc}") from None
    model.eval()
    names = list(model.tokenizer.model_input_names)
    sample = model.tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    names = [n for n in names if n in sample]
    graph = _Pipeline(model, names).eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    try:
        # The tracer warns about each Python shape check it freezes into the graph; the graph's vectors are
        # checked against torch's by the tests instead.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                tuple(sample[n] for n in names),
                str(target),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes=axes,
                opset_version=_OPSET,
                dynamo=False,  # the tracing exporter: the dynamo one needs onnxscript, which is not installed
            )
    except Exception as exc:  # the exporter raises many types; every one means "this model cannot be exported"
        raise ModelError(
            f"embedder.model={config.model!r}: cannot be exported to ONNX ({type(exc).__name__}: {exc}); "
            "use embedder.backend=torch"
        ) from None
    model.tokenizer.save_pretrained(str(target.parent))
    # Inputs the graph does not use (token_type_ids, for some models) are dropped by the exporter: feed only the rest.
    inputs = [i.name for i in onnx.load(str(target), load_external_data=False).graph.input]
    return {
        "model_file": target.name,
        "input_names": inputs,
        "max_seq_length": int(model.max_seq_length),
        "dimension": int(model.get_embedding_dimension()),
    }


class _Pipeline(torch.nn.Module):
    """The SentenceTransformer as a function of positional tensors, which is what the ONNX exporter traces."""

    def __init__(self, model: Any, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors, strict=True)))["sentence_embedding"]


def _quantise(source: Path, target: Path) -> None:
    """int8 weights, activations quantised as they run; per channel, which keeps the vectors much closer
    (cosine to float32 0.98 against 0.90 per tensor, measured on minilm-l6)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises shape pre-processing on the root logger; dynamic quantisation needs none
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            f"embedder.backend=onnx needs onnxruntime and onnx ({exc.name} is missing): {_INSTALL}"
        ) from None


class OnnxSentenceModel:
    """What ragtune's Embedder uses of a SentenceTransformer (tokenizer, max_seq_length, the dimension, encode),
    computed by onnxruntime from an export."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        _require_onnx()
        import onnxruntime

        settings = read_json(folder / SETTINGS, "embedder export settings")
        self.folder = folder
        self.max_seq_length = int(settings["max_seq_length"])
        self._dimension = int(settings["dimension"])
        self._inputs = list(settings["input_names"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
        # Threads that sleep between operators instead of spinning: beside other busy processes the spinning
        # threads fight them for the cores (measured on 2 busy cores: 66 -> 78 chunks/s with spinning off).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = str(folder / settings["model_file"])
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def get_embedding_dimension(self) -> int:
        return self._dimension

    def encode(
        self,
        texts: list[str],
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """One float32 vector per text, in the order given."""
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        # Longest first, as sentence-transformers does: texts of like length share a batch and pad less.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feeds = {name: batch[name].astype(np.int64) for name in self._inputs}
            vectors[rows] = self._session.run(None, feeds)[0]
        if normalize_embeddings:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def load_onnx_embedder(config: EmbedderConfig) -> OnnxSentenceModel:
    """The export for `config`, made once on first use (told on stderr), verified, loaded."""
    folder = export_dir(config)
    if not (folder / MANIFEST).is_file():
        folder = prepare_export(config)
    else:
        verify_export(folder)
    try:
        return OnnxSentenceModel(folder)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # onnxruntime's load errors are RuntimeErrors
        raise ModelError(
            f"the ONNX export of the embedder in {folder} cannot be loaded ({exc}); "
            "run `ragtune models prepare` to export it again"
        ) from None

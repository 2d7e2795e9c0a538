"""compare's rag-tuned-embedder path: an embedder trained on --docs (`ragtune train --target embedder`), reused
while the documents and settings are unchanged; the runner then indexes --docs with it and answers as rag."""

from __future__ import annotations

from typing import Any

from models.config import Config
from models.errors import IndexCorruptError, InputError, ModelError
from models.storage import folder_bytes
from ragtune.compare import keys
from ragtune.compare.phases import CompareError
from ragtune.compare.spec import TUNED_EMBEDDER

PHASE = "train:embedder"


def check_tuned_embedder(config: Config, paths: tuple[str, ...]) -> None:
    """Training runs the embedder with PyTorch: an ONNX embedder is refused before anything slow starts."""
    if TUNED_EMBEDDER in paths and config.embedder.backend != "torch":
        raise InputError(
            f"--paths {TUNED_EMBEDDER} trains the embedder with PyTorch, and embedder.backend="
            f"{config.embedder.backend}; run compare with --set embedder.backend=torch --set embedder.quantize=none "
            f"or leave {TUNED_EMBEDDER} out of --paths"
        )


def _stored(name: str) -> Any:
    """The trained embedder NAME with every file verified, or None when it is missing or damaged (trained again)."""
    from models.trained_embedders import read_trained_embedder

    try:
        return read_trained_embedder(name)
    except (InputError, ModelError, IndexCorruptError):
        return None


def train_embedder(runner: Any) -> dict[str, Any]:
    """The embedder trained on --docs with this config: the one of an earlier run with the same inputs, else trained.

    Its record holds the name (`embedder.model=NAME` for the index and the evals) and its fingerprint, which
    names the index built with it, so an embedder trained again under the same name never meets stale vectors.
    """
    from finetune.checkpoint import latest_checkpoint
    from finetune.embedder_train import embedder_run_dir
    from models.trained_embedders import embedder_fingerprint

    docs = runner.spec.docs
    key = keys.embedder_key(runner.config, runner.tree(docs))
    name = f"compare-emb-{key[:12]}"
    found = _stored(name)
    if (record := runner.phases.get(PHASE, key)) and found is not None:
        return runner.reused(PHASE, record)
    reused = found is not None
    if found is None:
        args = ["train", "--target", "embedder", "--docs", str(docs), "--name", name]
        run_folder = embedder_run_dir(name)
        if run_folder.exists() and latest_checkpoint(run_folder) is not None:
            args.append("--resume")  # an interrupted compare continues its training
        run = runner.cli(PHASE, args)
        found = _stored(name)
        if found is None:
            raise CompareError(
                f"step {PHASE} finished without a readable embedder {name} (see {runner.out / 'logs'}); "
                "re-run compare to train it again"
            )
    else:
        print(f"== {PHASE}: embedder {name} was trained on the same documents and settings, reused", flush=True)
    manifest = found.manifest
    queries = manifest.get("queries") if isinstance(manifest.get("queries"), dict) else {}
    loop_s = manifest.get("seconds")
    record = {
        "embedder": name,
        "fingerprint": embedder_fingerprint(found.path),
        # Trained here: the whole step (query generation, training, saving). Reused: its manifest's own times.
        "training_s": (queries.get("seconds") or 0) + (loop_s or 0) if reused else run.seconds,
        "queries_s": queries.get("seconds"),
        "queries": queries.get("method"),
        "query_count": queries.get("count"),
        "train_loop_s": loop_s,
        "steps": manifest.get("steps"),
        "loss": manifest.get("loss"),
        "peak_rss_mb": manifest.get("peak_rss_mb") if reused else run.peak_rss_mb,
        "disk_bytes": folder_bytes(found.path),
        "reused": reused,
    }
    return runner.done(PHASE, runner.phases.put(PHASE, key, record))

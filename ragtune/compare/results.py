"""results.json of a compare run, assembled from what finished: per path metrics, latency, cost, config.

Shape (every figure measured; None where a step did not run):
    {"paths": {"rag": {"status", "metrics": {"contains": {"mean", "ci95", "n"}, "f1": ..., "hit@3": ...},
                       "latency": {"first_token_s": {"p50", "p95"}, "total_s": ..., "tokens_per_s": ...},
                       "cost": {"one_off_s", "index_build_s", "training_s", "peak_rss_mb", "disk_bytes", ...},
                       "config": {...}}, ...},
     "primary_metric", "differences", "update", "retrieval", "machine", "questions", "docs", "complete",
     "unfinished", "command", "verdict"}
"retrieval" is {"mode": "configured"} or, with --retriever auto, also the choice and every setting's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.config import to_dict
from models.generate import resolve_backend
from models.storage import read_json, sha256_file
from ragtune.compare.metrics import paired_difference
from ragtune.compare.progress import Progress
from ragtune.compare.questions import read_questions
from ragtune.compare.spec import TUNED_EMBEDDER, path_mode, uses_documents

PRIMARY_LABELS = {"choice_accuracy": "choice accuracy", "contains": "answer contained"}


def primary_metric(questions: Path) -> str:
    """Choice accuracy when every question has a closed answer set, else whether the answer is contained."""
    return "choice_accuracy" if all(q.choices for q in read_questions(questions)) else "contains"


def row_score(row: dict[str, Any], metric: str) -> float:
    """One answers.jsonl row's 0/1 score on the primary metric."""
    return float(row["choice"] in row["answers"]) if metric == "choice_accuracy" else row[metric]


def per_question(folder: Path, metric: str) -> tuple[list[str], list[float]]:
    """Question ids and their 0/1 score on the primary metric, from an eval's answers.jsonl."""
    ids, values = [], []
    for line in (folder / "answers.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        ids.append(row["id"])
        values.append(row_score(row, metric))
    return ids, values


def _value(record: dict[str, Any] | None, key: str) -> Any:
    return record.get(key) if record else None


def cost_of(path: str, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One-off and running costs of a path: what was built for it and what answering took."""
    if path == TUNED_EMBEDDER:
        return _tuned_embedder_cost(records)
    mode = path_mode(path)
    index = records.get("index") if mode.retrieves else None
    synth = records.get("synth") if mode.adapted else None
    # RAFT data is made for the path that reads retrieved chunks with an adapter (hybrid).
    raft = records.get("raft") if mode.retrieves and mode.adapted else None
    # Without RAFT data there is no train:hybrid: hybrid then reads with the finetune adapter.
    train = (records.get(f"train:{path}") or records.get("train:finetune")) if mode.adapted else None
    answering = records.get(path)
    one_off = [
        _value(index, "index_build_s"),
        _value(synth, "synth_s"),
        _value(raft, "raft_s"),
        _value(train, "training_s"),
    ]
    peaks = [_value(r, "peak_rss_mb") for r in (index, synth, raft, train, answering)]
    disks = [_value(index, "disk_bytes"), _value(train, "disk_bytes")]
    return {
        "one_off_s": sum(v for v in one_off if v),
        "index_build_s": _value(index, "index_build_s"),
        "index_chunks": _value(index, "chunks"),
        "synth_s": _value(synth, "synth_s"),
        "raft_data_s": _value(raft, "raft_s"),
        "training_s": _value(train, "training_s"),
        "training_steps": _value(train, "steps"),
        "trainable_params": _value(train, "trainable_params") or 0,
        "total_params": _value(train, "total_params"),
        "adapter": _value(train, "adapter"),
        "peak_rss_mb": max((p for p in peaks if p), default=None),
        "answer_peak_rss_mb": _value(answering, "peak_rss_mb"),
        "disk_bytes": sum(d for d in disks if d),
        "eval_wall_s": _value(answering, "wall_s"),
        "reused": [r[k] for r, k in ((index, "index"), (train, "adapter")) if r and r.get("reused")],
    }


def _tuned_embedder_cost(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """rag-tuned-embedder: the embedder's training (its queries included) and the index built with it; no LM
    parameter is trained, and the embedder's own are all trained (trainable_params None: not an adapter's count)."""
    train, index, answering = records.get("train:embedder"), records.get("index:embedder"), records.get(TUNED_EMBEDDER)
    one_off = [_value(index, "index_build_s"), _value(train, "training_s")]
    peaks = [_value(r, "peak_rss_mb") for r in (index, train, answering)]
    disks = [_value(index, "disk_bytes"), _value(train, "disk_bytes")]
    return {
        "one_off_s": sum(v for v in one_off if v),
        "index_build_s": _value(index, "index_build_s"),
        "index_chunks": _value(index, "chunks"),
        "synth_s": None,
        "raft_data_s": None,
        "training_s": _value(train, "training_s"),  # the whole `train --target embedder` step
        "training_steps": _value(train, "steps"),
        "trainable_params": None,
        "total_params": None,
        "adapter": None,
        "embedder": _value(train, "embedder"),
        "embedder_queries_s": _value(train, "queries_s"),  # part of training_s
        "embedder_queries": _value(train, "queries"),
        "peak_rss_mb": max((p for p in peaks if p), default=None),
        "answer_peak_rss_mb": _value(answering, "peak_rss_mb"),
        "disk_bytes": sum(d for d in disks if d),
        "eval_wall_s": _value(answering, "wall_s"),
        "reused": [r[k] for r, k in ((index, "index"), (train, "embedder")) if r and r.get("reused")],
    }


def _first_index(records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The index of --docs: the configured embedder's, else (rag-tuned-embedder alone) the trained one's."""
    return records.get("index") or records.get("index:embedder")


def _eval(folder: Path | None) -> dict[str, Any] | None:
    return read_json(folder / "results.json", "eval results") if folder else None


def differences(progress: Progress, metric: str, phases: list[str]) -> dict[str, Any]:
    """Paired differences on the primary metric between every two evaluated paths, keyed "a - b"."""
    scores = {}
    for phase in phases:
        folder = progress.evals.get(phase)
        if folder is not None:
            scores[phase] = per_question(folder, metric)
    out: dict[str, Any] = {}
    for a, (ids_a, va) in scores.items():
        for b, (ids_b, vb) in scores.items():
            if a < b and ids_a == ids_b:
                out[f"{a} - {b}"] = paired_difference(va, vb)
    return out


def assemble_update(progress: Progress, metric: str, paths: dict[str, Any]) -> dict[str, Any] | None:
    spec, records, evals = progress.spec, progress.records, progress.evals
    if spec.update_docs is None:
        return None
    index, retrain, synth = (
        records.get("update:index"),
        records.get("update:train:finetune"),
        records.get("update:synth"),
    )
    rows: dict[str, Any] = {}
    for path in spec.paths:
        mode = path_mode(path)
        if path == TUNED_EMBEDDER:
            tuned = records.get("update:index:embedder")
            how = "incremental ingest of the new documents; the trained embedder is kept (not trained on them)"
            seconds, peak = _value(tuned, "update_s"), _value(tuned, "peak_rss_mb")
        elif not uses_documents(path):
            how, seconds, peak = "nothing to update: the model alone never reads the documents", 0.0, None
        elif not mode.retrieves:
            how = "retrained on the old and the new training pairs"
            if synth:
                how += " (new pairs synthesised from the new documents)"
            seconds = None if retrain is None else (retrain["training_s"] or 0) + (_value(synth, "synth_s") or 0)
            peak = _value(retrain, "peak_rss_mb")
        else:
            how = "incremental ingest of the new documents"
            if mode.adapted:
                how += "; the adapter is kept (it learned to read context, not the facts)"
            seconds, peak = _value(index, "update_s"), _value(index, "peak_rss_mb")
        old, new = _eval(evals.get(f"update:{path}:old")), _eval(evals.get(f"update:{path}:new"))
        before = (paths[path]["metrics"] or {}).get(metric)
        rows[path] = {
            "how": how,
            "update_s": seconds,
            "peak_rss_mb": peak,
            "old_before": before,
            # A path that reads no documents (base) does not change: its first answers to the old questions stand.
            "old": (old["metrics"].get(metric) if old else None) if uses_documents(path) else before,
            "new": new["metrics"].get(metric) if new else None,
            "old_metrics": old["metrics"] if old else None,
            "new_metrics": new["metrics"] if new else None,
        }
    return {
        "docs": str(spec.update_docs),
        "questions": str(spec.update_questions),
        "added_documents": _value(index, "added_documents"),
        "added_chunks": _value(index, "added_chunks"),
        "retrained_examples": _value(retrain, "examples"),
        "paths": rows,
    }


def assemble_retrieval(progress: Progress) -> dict[str, Any]:
    """How rag and hybrid retrieved: as configured, or the setting `--retriever auto` chose, with its figures."""
    mode = progress.spec.retriever
    if mode != "auto" or progress.retrieval is None:
        return {"mode": mode, "choice": None}
    scored = read_json(Path(progress.retrieval["results"]), "retrieval-only results")
    winner = scored["winner"]
    return {
        "mode": mode,
        "choice": winner["label"],
        "overrides": winner["overrides"],
        "metric": scored["metric"],
        "settings": scored["settings"],
        "differences": scored["differences"],
        "scored_questions": scored["scored_questions"],
        "wall_s": progress.retrieval.get("wall_s"),
        "results": progress.retrieval["results"],
    }


def backends(config: Any) -> dict[str, str]:
    """The engines a run used: index.backend (and its index.uri), llm.backend (and its llm.base_url)."""
    index = config.index.backend + (f" ({config.index.uri})" if config.index.backend != "hnswlib" else "")
    engine = resolve_backend(config.llm)  # what ran: `auto` names the engine it chose on this machine
    llm = engine + (" (llm.backend=auto)" if config.llm.backend == "auto" else "")
    llm += f" ({config.llm.base_url})" if engine == "openai" else ""
    return {"index": index, "llm": llm}


def assemble(progress: Progress, machine: dict[str, str]) -> dict[str, Any]:
    """Everything a script needs, from the phase records and eval folders that exist now."""
    spec = progress.spec
    metric = primary_metric(spec.questions)
    paths: dict[str, Any] = {}
    for path in spec.paths:
        results = _eval(progress.evals.get(path))
        config = results["config"] if results else to_dict(progress.config)
        paths[path] = {
            "status": "done" if results else "not run",
            "metrics": results["metrics"] if results else None,
            "latency": results["latency"] if results else None,
            "cost": cost_of(path, progress.records),
            "config": config,
            "answers": str(progress.evals[path] / "answers.jsonl") if results else None,
        }
    unfinished = [p for p, entry in paths.items() if entry["status"] != "done"]
    update = assemble_update(progress, metric, paths)
    if update:
        unfinished += [f"update:{p}" for p, row in update["paths"].items() if row["new"] is None or row["old"] is None]
    return {
        "paths": paths,
        "primary_metric": metric,
        "backends": backends(progress.config),
        "differences": differences(progress, metric, list(spec.paths)),
        "update": update,
        "retrieval": assemble_retrieval(progress),
        "machine": machine,
        "questions": {
            "file": str(spec.questions),
            "sha256": sha256_file(spec.questions),
            "limit": spec.limit,
            "seed": spec.seed,
            "asked": next((e["metrics"]["f1"]["n"] for e in paths.values() if e["metrics"]), None),
        },
        "docs": {"folder": str(spec.docs), "index_chunks": _value(_first_index(progress.records), "chunks")},
        "complete": not unfinished and progress.interrupted is None,
        "unfinished": unfinished,
        "stopped_by": progress.interrupted,
        "command": spec.command,
        "verdict": "",
    }

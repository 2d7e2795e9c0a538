"""`ragtune eval --retrieval-only --embedders`: every retrieval setting scored for several embedders, paired.

embedder.model is the reference and keeps the configured index; every other embedder (a preset, a trained
embedder or a local sentence-transformers folder) gets its own index, `{index.name}--{slug}`. Each index is
brought in line with --docs by the ordinary incremental ingest (so all hold the same documents), rebuilt when
it holds another embedder's vectors; then the settings run for each embedder on the same questions, and each
embedder's per-question scores are paired with the reference's, setting by setting.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from models.config import Config
from models.errors import ConfigError, InputError
from ragtune.compare.evidence import DEPTH, metric_label
from ragtune.compare.metrics import paired_difference
from ragtune.compare.questions import Question
from ragtune.compare.retrieval import SettingRun, per_question_key, run_settings, runs_result, summary_lines
from ragtune.compare.settings import Setting

# What the paired table reports, the first one deciding its verdict column.
PAIRED_METRICS = ("evidence_hit@5", "evidence_hit@1", "mrr")
_SLUG_CHARACTER = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Candidate:
    name: str  # as given on the command line (or embedder.model): the key in results.json
    model: str  # what embedder.model becomes: the preset or trained name, or the folder's absolute path
    index: str  # the index.name its chunks are embedded into


def resolve_embedders(names: Sequence[str], config: Config) -> list[Candidate]:
    """The reference (embedder.model, the configured index) first, then each name given; checked before any load."""
    reference = config.embedder.model
    candidates = [Candidate(reference, reference, config.index.name)]
    seen = {_identity(reference)}
    given: set[str] = set()
    for name in names:
        model = _model(name)
        if model in given:
            spelled = "" if model == name else f" (as {model})"
            raise InputError(f"--embedders names {name!r} twice{spelled}; list each embedder once")
        given.add(model)
        if model in seen:
            continue  # the reference, which is always scored
        seen.add(model)
        slug = _folder_slug(Path(model)) if Path(model).is_absolute() else model
        index = replace(config.index, name=f"{config.index.name}--{slug}").name  # a bad name fails before any load
        candidates.append(Candidate(name, model, index))
    return candidates


def _model(name: str) -> str:
    """embedder.model for a name given on the command line; InputError when it names no embedder."""
    from models.presets import preset_names

    if _known(name) or Path(name).expanduser().is_dir():
        return _identity(name)
    raise InputError(
        f"--embedders {name!r}: neither a preset ({', '.join(preset_names('embedder'))}), a trained embedder "
        "(see `ragtune embedders list`) nor a local sentence-transformers folder"
    )


def _known(name: str) -> bool:
    from models.presets import get_preset
    from models.trained_embedders import find_trained_embedder

    return get_preset(name, "embedder") is not None or find_trained_embedder(name) is not None


def _identity(name: str) -> str:
    """The preset or trained name as it is; a folder (when no embedder has that name) as its absolute path."""
    if _known(name):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _folder_slug(folder: Path) -> str:
    # Two folders called `model` must not share an index: the path's hash tells them apart.
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:8]
    return f"{_SLUG_CHARACTER.sub('-', folder.name).lstrip('.') or 'embedder'}-{digest}"


def with_embedder(config: Config, candidate: Candidate) -> Config:
    """`config` with the candidate's embedder and index; everything else as the user set it."""
    return replace(
        config,
        embedder=replace(config.embedder, model=candidate.model),
        index=replace(config.index, name=candidate.index),
    )


def prepare_index(
    config: Config, embedder: Any, docs_root: Path, progress: bool | None = None
) -> tuple[str, float, str]:
    """Ingest `docs_root` into the config's index: (built | rebuilt | updated | unchanged, seconds, what changed)."""
    from models.paths import index_dir
    from rag.collection import current_generation
    from rag.ingest import ingest

    started = time.perf_counter()
    existed = current_generation(index_dir(config)) is not None
    status = "built" if not existed else "updated"
    try:
        summary = ingest([docs_root], config, embedder, progress=progress)
    except ConfigError:
        if not existed:
            raise  # nothing to rebuild: the config itself is wrong (e.g. chunks longer than the embedder takes)
        # Built with another embedder (or chunking, backend, space): its vectors cannot be compared or reused.
        summary, status = ingest([docs_root], config, embedder, rebuild=True, progress=progress), "rebuilt"
    if summary.generation is None:
        status = "unchanged"
    return status, time.perf_counter() - started, summary.line()


def score_embedders(
    candidates: Sequence[Candidate],
    settings: Sequence[Setting],
    config: Config,
    make_config: Callable[[list[str]], Config],
    questions: Sequence[Question],
    docs_root: Path,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The reference's score_settings figures, plus "embedders" (each one's figures and index) and "paired"."""
    from models.embedders import build_embedder

    depth = max(make_config([]).rag.top_k, DEPTH)
    entries: dict[str, dict[str, Any]] = {}
    runs_by: dict[str, list[SettingRun]] = {}
    for candidate in candidates:
        indexed = with_embedder(config, candidate)
        embedder = build_embedder(indexed.embedder)
        status, seconds, changes = prepare_index(indexed, embedder, docs_root, progress)
        if status != "unchanged":
            where = f"index {candidate.index} from {docs_root}"
            log(f"embedder {candidate.name}: {status} {where} in {seconds:.1f}s ({changes})")
        make = partial(_with_overrides, make_config, candidate)
        runs, kept = run_settings(settings, make, questions, docs_root, embedder, progress)
        entries[candidate.name] = {
            **runs_result(runs, kept, len(questions), docs_root, depth),
            "model": candidate.model,
            "index": candidate.index,
            "ingest": status,
            "ingest_seconds": round(seconds, 2),
        }
        runs_by[candidate.name] = runs
    reference = candidates[0].name
    plain = {k: v for k, v in entries[reference].items() if k not in ("model", "index", "ingest", "ingest_seconds")}
    return {**plain, "reference_embedder": reference, "embedders": entries, "paired": paired_rows(runs_by, reference)}


def _with_overrides(make_config: Callable[[list[str]], Config], candidate: Candidate, extra: list[str]) -> Config:
    return with_embedder(make_config(extra), candidate)


def paired_rows(runs_by: dict[str, list[SettingRun]], reference: str) -> list[dict[str, Any]]:
    """Per setting, each embedder minus the reference on PAIRED_METRICS, paired over the same questions."""
    base = {run.setting.label: run for run in runs_by[reference]}
    rows = []
    for label, ref in base.items():
        for name, runs in runs_by.items():
            if name == reference:
                continue
            run = next(r for r in runs if r.setting.label == label)
            row: dict[str, Any] = {"setting": label, "embedder": name, "reference": reference}
            if run.skipped is not None or ref.skipped is not None:
                row["skipped"] = run.skipped if run.skipped is not None else ref.skipped
            else:
                for metric in PAIRED_METRICS:
                    key = per_question_key(metric)
                    row[metric] = paired_difference([r[key] for r in run.rows], [r[key] for r in ref.rows])
            rows.append(row)
    return rows


def embedder_lines(results: dict[str, Any]) -> list[str]:
    """What `eval --retrieval-only --embedders` prints: each embedder's setting tables, then the paired table."""
    lines: list[str] = []
    for name, entry in results["embedders"].items():
        role = "reference, embedder.model" if name == results["reference_embedder"] else entry["model"]
        lines += [f"== embedder {name} ({role}; index {entry['index']}) ==", "", *summary_lines(entry), ""]
    return lines + paired_lines(results["paired"], results["reference_embedder"])


def paired_lines(paired: list[dict[str, Any]], reference: str) -> list[str]:
    """The paired table: one row per setting and embedder, differences in points (MRR as a fraction)."""
    if not paired:
        return []
    setting_width = max(len("setting"), *(len(row["setting"]) for row in paired)) + 2
    name_width = max(len("embedder"), *(len(row["embedder"]) for row in paired)) + 2
    header = "".join(f"{metric_label(m):>28}" for m in PAIRED_METRICS)
    lines = [
        f"embedder - {reference} (the reference) on the same questions: mean difference in points "
        "(MRR as a fraction) with its paired 95% CI",
        f"  {'setting':{setting_width}}{'embedder':{name_width}}{header}  verdict on {metric_label(PAIRED_METRICS[0])}",
    ]
    for row in paired:
        start = f"  {row['setting']:{setting_width}}{row['embedder']:{name_width}}"
        if "skipped" in row:
            lines.append(f"{start}skipped ({row['skipped']})")
            continue
        cells = "".join(f"{_difference(row[m], points=m != 'mrr'):>28}" for m in PAIRED_METRICS)
        lines.append(f"{start}{cells}  {_verdict(row[PAIRED_METRICS[0]])}")
    return lines


def _difference(diff: dict[str, Any], points: bool) -> str:
    low, high = diff["ci95"]
    if points:
        return f"{100 * diff['mean']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"
    return f"{diff['mean']:+.3f} ({low:+.3f} to {high:+.3f})"


def _verdict(diff: dict[str, Any]) -> str:
    low, high = diff["ci95"]
    return "better" if low > 0 else "worse" if high < 0 else "not separable"

"""`ragtune compare`: every answering path on the same questions, with what each cost to build and update.

index -> (rag-tuned-embedder) an embedder trained on the documents and an index built with it -> training
data (given, or synthesised; RAFT examples for hybrid) -> adapters -> one eval per path
-> (optional) knowledge update: new documents ingested, the finetune adapter retrained, every path
re-evaluated on the old and the new questions -> report. Step times are wall-clock, model loading
included: what a user waits for. Indexes and adapters are named by the hash of their inputs and
reused when it matches, also across runs and when trained by hand with the same data and settings;
nothing is retrained silently.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from finetune.data import read_items
from models.config import Config, to_yaml
from models.errors import InputError
from models.modes import ADAPTED, RETRIEVING
from models.paths import data_home, index_dir
from models.storage import (
    atomic_write_json,
    atomic_write_text,
    folder_bytes,
    publish_dir,
    read_json,
    sha256_file,
    staged_dir,
)
from ragtune.compare import keys
from ragtune.compare.choice import choose_retrieval
from ragtune.compare.engines import check_engines, check_served_adapters
from ragtune.compare.judge import check_judge
from ragtune.compare.phases import CompareError, PhaseLog, run_cli, tree_digest
from ragtune.compare.progress import Progress
from ragtune.compare.report import write_report
from ragtune.compare.spec import TUNED_EMBEDDER, CompareSpec, path_mode, uses_documents
from ragtune.compare.tuned_embedder import check_tuned_embedder, train_embedder


class Runner:
    """One compare run: each step as a child `ragtune` process, recorded in `progress` as it finishes."""

    def __init__(self, spec: CompareSpec, config: Config) -> None:
        # Every step reads one config file; mode rag needs no adapter, and each eval names its path with --path.
        self.spec, self.config = spec, replace(config, mode="rag")
        self.out = spec.out
        self.phases = PhaseLog(self.out)
        self.progress = Progress(spec, self.config)
        self.config_file = self.out / "config.yaml"
        self._fingerprint: str | None = None
        self._trees: dict[Path, str] = {}
        # --retriever auto: the winning setting's overrides, applied to every retrieving path's evals.
        self.retrieval_sets: tuple[str, ...] = ()

    # -- plumbing -------------------------------------------------------------------------------------
    def cli(self, name: str, args: list[str], sets: tuple[str, ...] = ()) -> Any:
        argv = [*args, "--config", str(self.config_file)]
        for item in sets:
            argv += ["--set", item]
        print(f"== {name}", flush=True)
        return run_cli(argv, name.replace(":", "-"), self.out / "logs")

    def done(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        self.progress.records[name] = record
        return record

    def reused(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        print(f"== {name}: finished earlier, kept", flush=True)
        return self.done(name, record)

    def tree(self, folder: Path) -> str:
        """A document folder's digest, hashed once per run (the index, RAFT and update keys all use it)."""
        if folder not in self._trees:
            self._trees[folder] = tree_digest(folder)
        return self._trees[folder]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from finetune.adapters import base_fingerprint
            from models.loading import lm_folder

            self._fingerprint = base_fingerprint(lm_folder(self.config.llm.model))
        return self._fingerprint

    # -- index ----------------------------------------------------------------------------------------
    def index_key(self, *doc_folders: Path, embedder: tuple[str, str] | None = None) -> str:
        """The index of `doc_folders`; with `embedder` (a trained embedder's name and fingerprint) built with it."""
        if embedder is None:
            return keys.index_key(self.config, [self.tree(d) for d in doc_folders])
        tuned = replace(self.config, embedder=replace(self.config.embedder, model=embedder[0]))
        return keys.index_key(tuned, [self.tree(d) for d in doc_folders], embedder[1])

    def index_sets(self, name: str, embedder: str | None) -> tuple[str, ...]:
        return (f"index.name={name}",) + ((f"embedder.model={embedder}",) if embedder else ())

    def artefact_file(self, name: str) -> Path:
        return data_home() / "compare" / f"{name}.json"

    def index_root(self, name: str) -> Path:
        return index_dir(replace(self.config, index=replace(self.config.index, name=name)))

    def build_index(self, phase: str = "index", embedder: tuple[str, str] | None = None) -> dict[str, Any]:
        """An index of --docs, with the configured embedder or with `embedder` (a trained one's name, fingerprint)."""
        key = self.index_key(self.spec.docs, embedder=embedder)
        name = f"compare-{key[:12]}"
        published = (self.index_root(name) / "CURRENT").is_file()
        if (record := self.phases.get(phase, key)) and published:
            return self.reused(phase, record)
        stored = self.artefact_file(name)
        if stored.is_file() and published:
            return self.done(phase, self.phases.put(phase, key, {**read_json(stored, "index record"), "reused": True}))
        run = self.cli(
            phase, ["ingest", str(self.spec.docs), "--json"], self.index_sets(name, embedder and embedder[0])
        )
        summary = json.loads(run.stdout)
        if not summary["total_chunks"]:
            skipped = "; ".join(f"{path}: {why}" for path, why in summary["skipped"][:3])
            raise CompareError(
                f"--docs {self.spec.docs}: no document text was indexed{f' (skipped: {skipped})' if skipped else ''}; "
                "point --docs at a folder of .txt .md .html .pdf .docx or .jsonl files"
            )
        record = {
            "index": name,
            "index_build_s": run.seconds,
            "ingest_s": summary["seconds"],  # without starting the process and loading the embedder
            "chunks": summary["total_chunks"],
            "documents": len(summary["added"]) + len(summary["updated"]) + summary["unchanged"],
            "peak_rss_mb": run.peak_rss_mb,
            "disk_bytes": folder_bytes(self.index_root(name)),
            "reused": False,
        }
        if embedder is not None:  # read by `sets` (the evals embed questions with it) and by `update_index`
            record["embedder"], record["embedder_fingerprint"] = embedder
        atomic_write_json(stored, record)
        return self.done(phase, self.phases.put(phase, key, record))

    def update_index(self, base: dict[str, Any], phase: str = "update:index") -> dict[str, Any]:
        """A copy of the first index with the new documents ingested into it (with the same embedder): the
        incremental cost."""
        embedder = (base["embedder"], base["embedder_fingerprint"]) if base.get("embedder") else None
        key = self.index_key(self.spec.docs, self.spec.update_docs, embedder=embedder)
        name = f"compare-{key[:12]}"
        final = self.index_root(name)
        if (record := self.phases.get(phase, key)) and (final / "CURRENT").is_file():
            return self.reused(phase, record)
        # Always from a fresh copy of the first index, so the ingest below measures adding the new documents
        # (an updated index left by an earlier, unfinished run would make it look free).
        shutil.rmtree(final, ignore_errors=True)
        with staged_dir(final.parent, name) as staging:
            shutil.copytree(
                self.index_root(base["index"]),
                staging,
                ignore=shutil.ignore_patterns("write.lock", ".*"),
                dirs_exist_ok=True,
            )
            publish_dir(staging, final)
        run = self.cli(
            phase,
            ["ingest", str(self.spec.docs), str(self.spec.update_docs), "--json"],
            self.index_sets(name, embedder and embedder[0]),
        )
        summary = json.loads(run.stdout)
        record = {
            "index": name,
            "update_s": run.seconds,
            "ingest_s": summary["seconds"],
            "added_documents": len(summary["added"]),
            "added_chunks": summary["chunks"],
            "peak_rss_mb": run.peak_rss_mb,
            "disk_bytes": folder_bytes(final),
        }
        if embedder is not None:
            record["embedder"], record["embedder_fingerprint"] = embedder
        return self.done(phase, self.phases.put(phase, key, record))

    # -- training data --------------------------------------------------------------------------------
    def synthesise(self, name: str, docs: Path) -> tuple[Path, dict[str, Any]]:
        key = keys.synth_key(self.config, self.tree(docs))
        target = self.out / "train" / f"{name.replace(':', '-')}-{key[:12]}.jsonl"
        if (record := self.phases.get(name, key)) and target.is_file():
            return target, self.reused(name, record)
        run = self.cli(name, ["data", "synth", str(docs), "-o", str(target)])
        pairs = sum(1 for line in target.read_text(encoding="utf-8").splitlines() if line.strip())
        if pairs == 0:
            raise CompareError(
                f"synthesis kept no question/answer pairs from {docs} (see {self.out / 'logs'}); "
                "give training data with --train-data FILE instead"
            )
        record = {"file": str(target), "synth_s": run.seconds, "pairs": pairs, "peak_rss_mb": run.peak_rss_mb}
        return target, self.done(name, self.phases.put(name, key, record))

    def raft_data(self, pairs: Path) -> tuple[Path | None, dict[str, Any] | None]:
        """RAFT examples for hybrid when the pairs name their source (chunk or doc); else None."""
        _, first = next(read_items(pairs))  # spec.check and synthesis guarantee at least one record
        if not isinstance(first, dict) or not any(isinstance(first.get(k), str) for k in ("chunk", "doc")):
            return None, None
        key = keys.raft_key(self.config, sha256_file(pairs), self.tree(self.spec.docs))
        target = self.out / "train" / f"raft-{key[:12]}.jsonl"
        if (record := self.phases.get("raft", key)) and target.is_file():
            return target, self.reused("raft", record)
        run = self.cli("raft", ["data", "raft", str(pairs), "--docs", str(self.spec.docs), "-o", str(target)])
        record = {"file": str(target), "raft_s": run.seconds, "peak_rss_mb": run.peak_rss_mb}
        return target, self.done("raft", self.phases.put("raft", key, record))

    # -- adapters -------------------------------------------------------------------------------------
    def adapter(self, phase: str, role: str, data: Path) -> dict[str, Any]:
        """An adapter trained on `data` with this config: an existing one with the same inputs, else trained."""
        from finetune.adapters import list_adapters, read_adapter
        from finetune.checkpoint import latest_checkpoint
        from finetune.train import run_dir

        want = keys.adapter_inputs(self.config, self.fingerprint(), sha256_file(data))
        key = keys.adapter_key(want)
        if record := self.phases.get(phase, key):
            try:
                read_adapter(record["adapter"])
                return self.reused(phase, record)
            except InputError:
                pass  # removed since: find or train it again
        found = next((a for a in list_adapters() if keys.adapter_matches(a.manifest, want)), None)
        reused = found is not None
        if found is None:
            name = f"compare-{role}-{key[:12]}"
            args = ["train", "--data", str(data), "--name", name]
            run_folder = run_dir(name)
            if run_folder.exists() and latest_checkpoint(run_folder) is not None:
                args.append("--resume")  # an interrupted compare continues its training
            run = self.cli(phase, args)
            found = read_adapter(name)
        else:
            print(f"== {phase}: adapter {found.name} was trained on the same data and settings, reused", flush=True)
        metrics = found.manifest.get("metrics", {})
        record = {
            "adapter": found.name,
            "data": str(data),
            "examples": found.manifest.get("data", {}).get("examples"),
            # Reused: the training loop's own time from its manifest; trained here: the whole step.
            "training_s": metrics.get("seconds") if reused else run.seconds,
            "train_loop_s": metrics.get("seconds"),
            "peak_rss_mb": metrics.get("peak_rss_mb") if reused else run.peak_rss_mb,
            "trainable_params": metrics.get("trainable_params"),
            "total_params": metrics.get("total_params"),
            "steps": metrics.get("steps"),
            "train_loss": metrics.get("train_loss"),
            "eval_loss": metrics.get("eval_loss"),
            "disk_bytes": folder_bytes(found.path),
            "reused": reused,
        }
        return self.done(phase, self.phases.put(phase, key, record))

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, phase: str, path: str, questions: Path, docs: Path, sets: tuple[str, ...]) -> dict[str, Any]:
        spec = self.spec
        key = keys.eval_key(path, sha256_file(questions), spec.limit, spec.seed, sets, self.config)
        folder = self.out / "answers" / phase.replace(":", "-")
        if (record := self.phases.get(phase, key)) and (folder / "results.json").is_file():
            self.progress.evals[phase] = folder
            return self.reused(phase, record)
        args = ["eval", "--questions", str(questions), "--path", path, "--docs", str(docs), "-o", str(folder), "--json"]
        if spec.limit is not None:
            args += ["--limit", str(spec.limit), "--seed", str(spec.seed)]
        run = self.cli(phase, args, sets)
        self.progress.evals[phase] = folder
        record = {"folder": str(folder), "wall_s": run.seconds, "peak_rss_mb": run.peak_rss_mb, "sets": list(sets)}
        return self.done(phase, self.phases.put(phase, key, record))

    # -- the whole run --------------------------------------------------------------------------------
    def run(self) -> None:
        spec, paths = self.spec, self.spec.paths
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_file, to_yaml(self.config))
        # --retriever auto scores its settings on the index of the configured embedder.
        index = self.build_index() if any(p in RETRIEVING for p in paths) or spec.retriever == "auto" else None
        if index is not None and spec.retriever == "auto":
            self.retrieval_sets = choose_retrieval(self, index)
        indexes = {p: index for p in paths}
        if TUNED_EMBEDDER in paths:
            trained = train_embedder(self)
            indexes[TUNED_EMBEDDER] = self.build_index("index:embedder", (trained["embedder"], trained["fingerprint"]))
        pairs = None
        if any(p in ADAPTED for p in paths):
            pairs = spec.train_data or self.synthesise("synth", spec.docs)[0]
        adapters: dict[str, dict[str, Any]] = {}
        raft = self.raft_data(pairs)[0] if "hybrid" in paths else None
        if "finetune" in paths or ("hybrid" in paths and raft is None):
            adapters["finetune"] = self.adapter("train:finetune", "finetune", pairs)
        if "hybrid" in paths:
            # Without pairs that name their source there is no RAFT data: hybrid reads with the finetune adapter.
            adapters["hybrid"] = self.adapter("train:hybrid", "raft", raft) if raft else adapters["finetune"]
        check_served_adapters(self.config, [a["adapter"] for a in adapters.values()])
        for path in paths:
            sets = self.sets(path, indexes[path], adapters.get(path))
            self.evaluate(path, path_mode(path).name, spec.questions, spec.docs, sets)
        if spec.update_docs is not None:
            self.run_update(index, indexes, adapters, pairs)

    def sets(self, path: str, index: dict[str, Any] | None, adapter: dict[str, Any] | None) -> tuple[str, ...]:
        sets = []
        mode = path_mode(path)
        if mode.retrieves and index is not None:
            sets += self.index_sets(index["index"], index.get("embedder"))
            sets += self.retrieval_sets
        if mode.adapted and adapter is not None:
            sets.append(f"finetune.adapter={adapter['adapter']}")
        return tuple(sets)

    def run_update(
        self, index: dict | None, indexes: dict[str, dict | None], adapters: dict[str, dict], pairs: Path | None
    ) -> None:
        """New documents arrive: bring each path up to date, then ask the old and the new questions."""
        spec, paths = self.spec, self.spec.paths
        needed = index is not None and any(p in RETRIEVING for p in paths)
        new_index = self.update_index(index) if needed else None
        new_indexes = {p: new_index for p in paths}
        if TUNED_EMBEDDER in paths:
            # The trained embedder is kept: the new documents are embedded with it, it is not trained on them.
            new_indexes[TUNED_EMBEDDER] = self.update_index(indexes[TUNED_EMBEDDER], "update:index:embedder")
        new_adapters = dict(adapters)
        if "finetune" in paths:
            extra = spec.update_train_data or self.synthesise("update:synth", spec.update_docs)[0]
            merged = self.out / "train" / f"update-{sha256_file(pairs)[:8]}-{sha256_file(extra)[:8]}.jsonl"
            if not merged.is_file():
                # Retraining on old + new data: training on the new pairs alone would teach the new facts
                # and let the old ones fade, which is the forgetting this experiment measures.
                atomic_write_text(merged, _join_jsonl(pairs, extra))
            new_adapters["finetune"] = self.adapter("update:train:finetune", "finetune", merged)
            check_served_adapters(self.config, [new_adapters["finetune"]["adapter"]])
        for path in paths:
            sets, mode = self.sets(path, new_indexes[path], new_adapters.get(path)), path_mode(path).name
            if uses_documents(path):  # else the model does not change: its old answers stand
                self.evaluate(f"update:{path}:old", mode, spec.questions, spec.docs, sets)
            self.evaluate(f"update:{path}:new", mode, spec.update_questions, spec.update_docs, sets)


def _join_jsonl(*files: Path) -> str:
    parts = [f.read_text(encoding="utf-8").rstrip("\n") for f in files]
    return "\n".join(p for p in parts if p) + "\n"


def run_compare(spec: CompareSpec, config: Config) -> Progress:
    """Run what is missing, then write the report; Ctrl-C still writes the report of what finished."""
    spec.check()
    check_engines(config, spec.paths)
    check_judge(config, spec.paths)
    check_tuned_embedder(config, spec.paths)
    runner = Runner(spec, config)
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.progress.interrupted = "interrupted (Ctrl-C)"
        write_report(runner.progress)
        print(
            f"compare interrupted: {spec.out / 'report.md'} shows what finished; run the same command again "
            "to continue from there",
            file=sys.stderr,
        )
        raise
    except CompareError as exc:
        runner.progress.interrupted = str(exc)
        write_report(runner.progress)
        raise
    write_report(runner.progress)
    return runner.progress

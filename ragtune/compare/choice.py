"""`compare --retriever auto`: score every retrieval setting without the LM, then retrieve with the best.

The scoring is one `ragtune eval --retrieval-only` step over compare's index (minutes, no LM); its winner on
evidence hit@5 becomes `--set` overrides for every retrieving path's evals, so rag and hybrid answer with
it, and the report shows every setting's figures beside the choice.
"""

from __future__ import annotations

from typing import Any

from models.storage import read_json, sha256_file
from ragtune.compare import keys
from ragtune.compare.phases import CompareError


def choose_retrieval(runner: Any, index: dict[str, Any]) -> tuple[str, ...]:
    """The winning setting's overrides; the scoring step is reused while its inputs are unchanged."""
    spec = runner.spec
    key = keys.retrieval_key(sha256_file(spec.questions), spec.limit, spec.seed, index["index"], runner.config)
    folder = runner.out / "retrieval"
    record = runner.phases.get("retrieval", key)
    if record and (folder / "results.json").is_file():
        runner.reused("retrieval", record)
    else:
        args = ["eval", "--retrieval-only", "--questions", str(spec.questions), "--docs", str(spec.docs)]
        args += ["-o", str(folder), "--json"]
        if spec.limit is not None:
            args += ["--limit", str(spec.limit), "--seed", str(spec.seed)]
        run = runner.cli("retrieval", args, (f"index.name={index['index']}",))
        record = {"folder": str(folder), "wall_s": run.seconds, "peak_rss_mb": run.peak_rss_mb}
        record = runner.done("retrieval", runner.phases.put("retrieval", key, record))
    winner = read_json(folder / "results.json", "retrieval-only results")["winner"]
    if winner is None:
        raise CompareError(
            f"--retriever auto: no retrieval setting could run (the reasons are in {folder / 'results.json'}); "
            "fix them or drop --retriever auto"
        )
    runner.progress.retrieval = {**record, "results": str(folder / "results.json")}
    print(f"== retrieval: {winner['label']} is best on evidence hit@5; rag and hybrid retrieve with it", flush=True)
    return tuple(winner["overrides"])

"""ragtune: answer questions about your own documents with RAG or fine-tuning, and measure which is better.

The app layer over models/, rag/ and finetune/: cli/ (the `ragtune` command, one module per command
group), data/ (corpus chunks, RAFT data, dataset importers), compare/ (eval, metrics, report, verdict),
serve/ (HTTP API, jobs worker, chat page), app.py (config -> answering pipeline) and benchmark.py
(what the benchmark scripts and compare's report share), api.py (`ragtune.open`: the Python API) and
bundle/ with doctor.py (the air-gapped install and its self-check).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `ragtune.open` and `ragtune.Ragtune` load the model stack only when a script asks for them.
    if name in ("open", "Ragtune"):
        from ragtune import api

        return getattr(api, name)
    raise AttributeError(f"module 'ragtune' has no attribute {name!r}")

"""ragtune: answer questions about your own documents with RAG or fine-tuning, and measure which is better.

The app layer over models/, rag/ and finetune/: cli/ (the `ragtune` command, one module per command
group), data/ (corpus chunks, RAFT data, dataset importers), compare/ (eval, metrics, report, verdict),
serve/ (HTTP API as a route table, jobs worker, chat page), compose.py (config -> the mode's Answerer),
closed_book.py (the base and finetune Answerer), python_api.py (`ragtune.open`: the Python API) and
bundle/ with doctor.py (the air-gapped install and its self-check).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `ragtune.open` and `ragtune.Ragtune` load the model stack only when a script asks for them.
    if name in ("open", "Ragtune"):
        from ragtune import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'ragtune' has no attribute {name!r}")

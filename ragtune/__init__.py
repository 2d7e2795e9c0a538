"""ragtune: answer questions about your own documents with RAG or fine-tuning, and measure which is better.

The app layer over models/, rag/ and finetune/: cli/ (the `ragtune` command, one module per command
group), data/ (corpus chunks, RAFT data, dataset importers), compare/ (eval, metrics, report, verdict),
serve/ (HTTP API, jobs worker, chat page), app.py (config -> answering pipeline) and benchmark.py
(what the benchmark scripts and compare's report share).
"""

__version__ = "0.1.0"

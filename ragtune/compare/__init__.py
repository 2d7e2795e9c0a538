"""Compare the base, RAG, fine-tuned and hybrid paths (and RAG with a trained embedder) on the same questions.

questions and spec check the inputs; evaluate, metrics and evidence (retrieval per chunk) score one path;
phases and runner build what each path needs (index, training data, adapters; tuned_embedder the embedder
trained on the documents) and reuse it by the hash of its inputs; settings, retrieval and choice score
retrieval settings without the LM and pick one; progress holds what finished; results, figures, charts,
verdict and report turn that into results.json, report.md and report.html. longdocs and scale are the pieces
of the retrieval benchmark (bench/retrieval.py); tables holds the Markdown tables and machine rows that
reports share.
"""

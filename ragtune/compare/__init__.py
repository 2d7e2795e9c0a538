"""Compare the base, RAG, fine-tuned and hybrid paths on the same questions.

questions and spec check the inputs; evaluate and metrics score one path; phases and runner build what
each path needs (index, training data, adapters) and reuse it by the hash of its inputs; progress holds
what finished; results, figures, charts, verdict and report turn that into results.json, report.md
and report.html.
"""

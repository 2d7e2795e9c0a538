"""Compare the RAG, fine-tuned and hybrid paths on the same questions: data, metrics and reports."""

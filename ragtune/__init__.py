"""ragtune: answer questions about your own documents with RAG or fine-tuning, and measure which is better."""

__version__ = "0.1.0"

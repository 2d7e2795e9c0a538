"""Retrieval-augmented answering: load, chunk, embed, index, retrieve, prompt, answer."""

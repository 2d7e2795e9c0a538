"""One module per generation engine, each a `LanguageModel` chosen by llm.backend (models/generate.py)."""

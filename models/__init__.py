"""Shared layer of ragtune: config, model loading, generation, storage and errors."""

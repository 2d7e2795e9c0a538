"""`ragtune serve`: an OpenAI-compatible local HTTP API (chat, embeddings, files, fine-tuning jobs) and a chat page."""

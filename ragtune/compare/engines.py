"""Before compare writes anything: the index engine and the LM server the config names answer now.

Every step runs in a child process that connects on its own; a server that is down would otherwise fail the
first step that needs it (the index after its config and logs are written, the LM after the index is built).
"""

from __future__ import annotations

from models.config import Config
from ragtune.compare.spec import retrieving


def check_engines(config: Config, paths: tuple[str, ...]) -> None:
    """Raise the typed error naming index.uri or llm.base_url when that engine cannot be reached."""
    if retrieving(paths):
        from rag.generations import generation_store

        generation_store(config.index).reach()
    if config.llm.backend == "openai":  # a local engine loads in each step; only a server can be down
        from models.generate import load_language_model

        # Connecting asks the server for its models: down, a wrong key or an unserved model fails here.
        load_language_model(config.llm, progress=False).close()


def check_served_adapters(config: Config, adapters: list[str]) -> None:
    """With llm.backend=openai the server answers with each adapter, by name: one it lacks stops compare after
    training and before any path is answered, naming the LoRA and the `--lora-modules` flag that adds it."""
    if config.llm.backend != "openai" or not adapters:
        return
    from finetune.adapters import read_adapter
    from models.errors import AdapterError
    from models.generate import AdapterRef, load_language_model
    from ragtune.compare.phases import CompareError

    lm = load_language_model(config.llm, progress=False)
    try:
        for name in dict.fromkeys(adapters):  # hybrid may read with the finetune adapter: asked once
            lm.load_adapter(AdapterRef(name, read_adapter(name).path))
    except AdapterError as exc:
        raise CompareError(
            f"{exc}; the adapters and finished steps are kept: run the same compare again once the server serves it"
        ) from None
    finally:
        lm.close()

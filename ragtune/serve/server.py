"""Start the server: load the models once, wire the jobs worker, the conversations, the document library and the
reports, then run uvicorn."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from models.config import Config
from models.paths import data_home
from ragtune.serve.auth import load_api_key
from ragtune.serve.engine import Engine
from ragtune.serve.guard import uvicorn_options
from ragtune.serve.routes import create_app


def assemble(engine: Engine, api_key: str) -> FastAPI:
    """The whole app over a loaded engine: chat, embeddings, files, fine-tuning jobs (`app.state.runner`),
    conversations (`app.state.conversations`, opened and checked here: a damaged file stops the start), the
    document library indexed in the background (`app.state.library`) and the compare reports."""
    from ragtune.serve.conversation_routes import conversations_router
    from ragtune.serve.conversations import ConversationStore, conversations_file
    from ragtune.serve.jobs import JobRunner, jobs_router
    from ragtune.serve.library import Library
    from ragtune.serve.library_routes import library_router, reports_router

    conversations = ConversationStore(conversations_file(data_home()), engine.config.serve)
    runner = JobRunner(engine.config)
    library = Library(engine.config, engine.embedder)
    routers = [
        jobs_router(runner, engine),
        conversations_router(conversations, engine),
        library_router(library, engine),
        reports_router(engine.config),
    ]
    app = create_app(engine, api_key, extra_routers=routers)
    app.router.on_startup += [runner.start, library.start]
    app.router.on_shutdown += [runner.stop, library.stop]
    app.state.runner, app.state.conversations, app.state.library = runner, conversations, library
    return app


def serve(config: Config) -> int:
    import uvicorn

    api_key = load_api_key(config.serve)  # fails on a bad key setup before the models load
    app = assemble(Engine(config), api_key)
    print(
        f"ragtune: serving on http://{config.serve.host}:{config.serve.port} (chat page at /, API at /v1)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=config.serve.host, port=config.serve.port, **uvicorn_options(config.serve))
    return 0

"""Start the server: load the models once, wire the jobs worker, then run uvicorn on the configured address."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from models.config import Config
from ragtune.serve.auth import load_api_key
from ragtune.serve.engine import Engine
from ragtune.serve.guard import uvicorn_options
from ragtune.serve.routes import create_app


def assemble(engine: Engine, api_key: str) -> FastAPI:
    """The whole app over a loaded engine: chat, embeddings, files and fine-tuning jobs (`app.state.runner`)."""
    from ragtune.serve.jobs import JobRunner, jobs_router

    runner = JobRunner(engine.config)
    app = create_app(engine, api_key, extra_routers=[jobs_router(runner, engine)])
    app.router.on_startup.append(runner.start)
    app.router.on_shutdown.append(runner.stop)
    app.state.runner = runner
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

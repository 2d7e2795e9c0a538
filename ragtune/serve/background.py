"""Run an ASGI app with uvicorn on a free loopback port in a background thread (tests, benchmarks), with the
read deadlines `ragtune serve` has (the app's `state.serve` limits, else the defaults)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def running(app: Any, timeout: float = 30) -> Iterator[str]:
    """Yield the server's base URL (http://127.0.0.1:PORT) while it runs; stop it afterwards."""
    import uvicorn

    from models.config import ServeConfig
    from ragtune.serve.guard import uvicorn_options

    # Binding here and handing uvicorn the socket leaves no window for another process to take the port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    limits = getattr(getattr(app, "state", None), "serve", None) or ServeConfig()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **uvicorn_options(limits)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()

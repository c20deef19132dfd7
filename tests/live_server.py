"""One way to serve the gateway over real HTTP in tests: uvicorn on a free local port, in a thread.

Used by tests/http (``serve``, ``live_server``, ``gateway_url``) and by tests/triton's
``live_gateway``.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app_or_settings: FastAPI | Settings, *, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run uvicorn in a thread; yield ``http://127.0.0.1:PORT``; stop it on exit.

    Raises RuntimeError when the server exits or is not up within ``startup_timeout`` seconds.
    """
    app = app_or_settings if isinstance(app_or_settings, FastAPI) else create_app(app_or_settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn on port {port} did not start within {startup_timeout:g} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

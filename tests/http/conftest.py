"""Real-HTTP fixtures: the gateway served by uvicorn on a free local port, in a thread.

``live_server(settings_or_app)`` starts a server and returns its base URL; servers stop at the
end of the test. ``gateway_url`` is one module-shared server over the session's ``model_repo``.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
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
    """Run uvicorn in a thread; yield ``http://127.0.0.1:PORT``; stop it on exit."""
    app = app_or_settings if isinstance(app_or_settings, FastAPI) else create_app(app_or_settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("uvicorn did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server() -> Iterator[Callable[[FastAPI | Settings], str]]:
    """Factory: ``url = live_server(settings_or_app)``; every server stops after the test."""
    stack = []

    def start(app_or_settings: FastAPI | Settings) -> str:
        cm = serve(app_or_settings)
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def repo_settings(model_repo, **overrides) -> Settings:
    """Test settings over ``model_repo`` (single ORT thread: CI has two cores)."""
    base = dict(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="module")
def gateway_url(model_repo) -> Iterator[str]:
    """A gateway over the session's test repository, shared by the tests of one module."""
    with serve(repo_settings(model_repo)) as url:
        yield url

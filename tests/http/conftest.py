"""Real-HTTP fixtures: the gateway served by uvicorn on a free local port, in a thread
(:func:`tests.helpers.serve`).

``live_server(settings_or_app)`` starts a server and returns its base URL; servers stop at the
end of the test. ``gateway_url`` is one module-shared server over the session's ``model_repo``,
``detector_url`` one over its detection model (``det_repo``); ``fake_detector_url`` a gateway
whose only model is :class:`tests.helpers.FakeDetector`'s.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.helpers import FakeDetector, repo_settings, serve


@pytest.fixture
def live_server() -> Iterator[Callable[[FastAPI | Settings], str]]:
    """Factory: ``url = live_server(settings_or_app)``; every server stops after the test."""
    with ExitStack() as stack:
        yield lambda app_or_settings: stack.enter_context(serve(app_or_settings))


@pytest.fixture(scope="module")
def gateway_url(model_repo) -> Iterator[str]:
    """A gateway over the session's test repository, shared by the tests of one module."""
    with serve(repo_settings(model_repo)) as url:
        yield url


@pytest.fixture(scope="module")
def detector_url(det_repo: Path) -> Iterator[str]:
    """A gateway serving the session's detection model (``det_repo``), one request at a time."""
    settings = repo_settings(det_repo, max_concurrency=1, request_timeout_s=300)
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="module")
def fake_detector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose only model is :class:`FakeDetector`'s."""
    settings = Settings(repository=Path(tmp_path_factory.mktemp("no_repo")))
    with serve(create_app(settings, backend=FakeDetector())) as url:
        yield url

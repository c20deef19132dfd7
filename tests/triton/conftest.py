"""Fixtures: a real ``tritonserver`` serving CPU twins of the session's exported test models.

* ``triton_install``: ``scripts/install_triton.sh`` (cached after the first run);
* ``triton_cpu_repo``: CPU twins (python backend + ONNX Runtime, the same ``model.onnx``) of every
  entry of the shared ``model_repo`` fixture (tests/conftest.py);
* ``triton_server``: one ready server for the session (tests that kill Triton start their own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.triton.harness import TritonInstall, TritonServer, install_triton


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    """Install (or reuse) the CPU tritonserver under .cache/triton."""
    return install_triton()


@pytest.fixture(scope="session")
def triton_cpu_repo(model_repo: Path, triton_install: TritonInstall,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CPU twins of the session's exported models (same names, metadata and ONNX files)."""
    from model_export.triton_cpu import write_cpu_repository

    dst = tmp_path_factory.mktemp("triton_cpu_repo")
    written = write_cpu_repository(model_repo, dst, triton_install.pydeps)
    assert written, f"no entries in {model_repo}"
    return dst


@pytest.fixture(scope="session")
def triton_server(triton_install: TritonInstall, triton_cpu_repo: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A ready tritonserver serving :func:`triton_cpu_repo` for the whole session."""
    log = tmp_path_factory.mktemp("triton_logs") / "tritonserver.log"
    server = TritonServer(triton_install, triton_cpu_repo, log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()

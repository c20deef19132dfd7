"""Fixtures: a real ``tritonserver`` serving CPU twins of the session's exported test models.

* ``triton_install``: ``scripts/install_triton.sh`` (cached after the first run);
* ``serving_repo``: one repository with every session model: the four of ``model_repo``
  (tests/conftest.py), the detection model of ``det_repo`` (the same session export that
  tests/detection uses), the face detector of ``face_det_repo`` and the precision tiers of
  ``tier_repo``, as links to the exported
  entries (nothing is exported twice);
* ``triton_cpu_repo``: CPU twins (python backend + ONNX Runtime, the same ``model.onnx``) of every
  entry of ``serving_repo``, warm-up samples included (the detection entry's ``image_size`` file);
* ``triton_lean_repo``: the twin of ``seg_lip`` alone, for tests that start and kill their own
  servers (a server with one small model is ready in a fraction of the time);
* ``triton_server``: one ready server of ``triton_cpu_repo`` for the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.triton.harness import LEAN_MODEL, TritonInstall, TritonServer, install_triton


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    """Install (or reuse) the CPU tritonserver under .cache/triton."""
    return install_triton()


@pytest.fixture(scope="session")
def serving_repo(model_repo: Path, det_repo: Path, face_det_repo: Path, tier_repo: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding every session model (segmentation, landmarks, detection, face
    detection, and the precision tiers of ``TIER_MODEL``) as links."""
    from model_export.repository import CONFIG_FILENAME

    dst = tmp_path_factory.mktemp("serving_repo")
    for repo in (model_repo, det_repo, face_det_repo, tier_repo):
        for entry in sorted(repo.iterdir()):
            if (entry / CONFIG_FILENAME).is_file():
                (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return dst


@pytest.fixture(scope="session")
def triton_cpu_repo(serving_repo: Path, triton_install: TritonInstall,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CPU twins of every session model (same names, metadata, warm-up and ONNX files)."""
    from model_export.triton_cpu import write_cpu_repository

    dst = tmp_path_factory.mktemp("triton_cpu_repo")
    written = write_cpu_repository(serving_repo, dst, triton_install.pydeps)
    assert {p.name for p in written} == {p.name for p in serving_repo.iterdir()}
    return dst


@pytest.fixture(scope="session")
def triton_lean_repo(model_repo: Path, triton_install: TritonInstall,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CPU twin of ``LEAN_MODEL`` alone (servers that are killed and restarted)."""
    from model_export.triton_cpu import write_cpu_variant

    dst = tmp_path_factory.mktemp("triton_lean_repo")
    write_cpu_variant(model_repo / LEAN_MODEL, dst, triton_install.pydeps)
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

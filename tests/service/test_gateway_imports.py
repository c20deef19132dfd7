"""The gateway stays free of torch and model_export (its image installs neither; OpenCV, the
official resize kernel, is one of its dependencies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import pkgutil, importlib, sys
import service
for mod in pkgutil.walk_packages(service.__path__, "service."):
    importlib.import_module(mod.name)
from service.app import create_app
from service.settings import Settings
create_app(Settings(repository=sys.argv[1]))
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "model_export"))
print(",".join(banned))
"""


def test_no_service_module_imports_torch_or_model_export(model_repo) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(model_repo)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the gateway imported {out.stdout.strip()}"


_NUMBA_PROBE = """
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings(repository=sys.argv[1]))) as client:
    assert client.get("/readyz").status_code == 200
    tasks = sorted({m["task"] for m in client.get("/v1/models").json()["models"]})
print(",".join(tasks), "numba" in sys.modules)
"""


def test_numba_loads_at_start_up_only_with_a_segmentation_model(model_repo, det_repo) -> None:
    """The merge's compiled loops are built before the gateway reports ready when it serves a
    segmentation model (not in the first request), and never otherwise (numba's LLVM is ~54 MiB
    of private memory)."""
    for repo, seg in ((model_repo, True), (det_repo, False)):
        out = subprocess.run([sys.executable, "-c", _NUMBA_PROBE, str(repo)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        tasks, loaded = out.stdout.split()
        assert ("segmentation" in tasks.split(",")) == seg, tasks
        assert loaded == str(seg), out.stdout

"""``scripts/serve.sh`` installs only the gateway (no torch) when the repository holds models,
and the exporter (for the random-init demo repository) only when it holds none. Run against a
stub interpreter that records what it is asked to do (no install, no network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
"""


def _serve(tmp_path: Path, repo: Path) -> list[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB)
    python.chmod(0o755)
    env = {**os.environ, "HRNET_VENV": str(venv), "HRNET_REPOSITORY": str(repo)}
    subprocess.run(["bash", "scripts/serve.sh"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    return (venv / "calls.log").read_text().splitlines()


def test_a_repository_with_models_installs_the_gateway_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "hrnet.json").write_text("{}")
    calls = _serve(tmp_path, repo)
    installs = [c for c in calls if c.startswith("-m pip install") and "--upgrade" not in c]
    assert installs == ["-m pip install -q -e .[cpu,openvino]"], calls  # no export extra: no torch
    assert not any("model_export" in c for c in calls)
    assert calls[-1].startswith("-m service --host")


def test_an_empty_repository_gets_the_demo_models(tmp_path):
    repo = tmp_path / "empty"
    calls = _serve(tmp_path, repo)
    assert "-m pip install -q -e .[export,cpu,openvino]" in calls
    assert f"-m model_export demo --repo {repo}" in calls
    assert calls[-1].startswith("-m service --host")

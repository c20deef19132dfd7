"""benchmarks/gpu_check.sh (run by nothing in CI, there is no GPU here): the shell parses, and
its Python half runs every step on CPU providers (``--cpu``: no TensorRT) on the session's
small segmentation model, printing the table whose every line the script documents."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SEG_CITYSCAPES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_script_parses_and_is_run_by_no_ci() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    for ci in (ROOT / ".github").rglob("*.y*ml") if (ROOT / ".github").exists() else []:
        assert "gpu_check" not in ci.read_text()
    text = SCRIPT.read_text()
    assert "benchmarks/gpu_check.py" in text and "--instance-kind" in text
    assert "WHEELHOUSE" in text and "onnxruntime-gpu" in text


def test_python_steps_run_on_cpu(model_repo: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    out = tmp_path / "figures.json"
    code = gpu_check.main(["--repo", str(model_repo), "--model", SEG_CITYSCAPES, "--cpu",
                           "--photo-size", "128x256", "--repeat", "1", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out.read_text())
    assert figures["plans"] == {"skipped": "tensorrt is not importable here"}
    assert figures["ort_parity"]["label_agreement"] == 1.0  # CPU against CPU
    s = figures["serving"]
    assert s["official_passes"] > s["single_passes"] == 1
    assert all(s[k] > 0 for k in ("single_http_ms", "single_bare_ms", "official_http_ms",
                                  "official_bare_ms"))
    # The merge graph against the gateway's numpy merge, through two real gateways.
    assert s["merge_agreement"] >= 0.999
    documented = SCRIPT.read_text()
    assert len(table) == 10
    for line in table:
        label = line.split("  ")[0].strip()
        # Every line of the table is explained in the script (sizes differ on CPU).
        key = label.split(",")[0].split(":")[0].split("(")[0].strip()
        assert key in documented, f"table line {label!r} is not documented in gpu_check.sh"

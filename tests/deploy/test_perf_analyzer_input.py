"""``examples/perf_analyzer_input.py`` (docs/deployment.md's perf_analyzer recipe) writes the
detection graph's two inputs as perf_analyzer's real-input JSON: FP32 ``image`` padded to the
size divisor, INT64 ``image_size`` the valid size."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.contract import padded, rescale_size
from tests.helpers import detector_metadata, photo_png

ROOT = Path(__file__).resolve().parents[2]


def test_detection_input_json(tmp_path):
    entry = tmp_path / "det"
    entry.mkdir()
    meta = detector_metadata()
    (entry / "hrnet.json").write_text(meta.model_dump_json())
    (tmp_path / "street.png").write_bytes(photo_png((300, 200)))
    out = tmp_path / "input.json"
    subprocess.run([sys.executable, str(ROOT / "examples" / "perf_analyzer_input.py"), str(entry),
                    str(tmp_path / "street.png"), "-o", str(out)], check=True, timeout=60)
    (step,) = json.loads(out.read_text())["data"]
    h, w, _ = rescale_size(200, 300, meta.detection.max_size)
    ph, pw = padded(h, 32), padded(w, 32)
    assert step["image_size"] == {"content": [h, w], "shape": [2]}
    assert step["image"]["shape"] == [3, ph, pw]
    pixels = np.frombuffer(base64.b64decode(step["image"]["b64"]), np.float32).reshape(3, ph, pw)
    assert pixels[:, :h, :w].std() > 10  # the photo
    mean = np.array(meta.normalization.mean_pixel, np.float32)
    np.testing.assert_allclose(pixels[:, h:, :].reshape(3, -1).T, np.broadcast_to(
        mean, (pixels[:, h:, :].size // 3, 3)), atol=1e-4)  # padded with the mean pixel

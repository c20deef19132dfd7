"""A plain tritonclient gRPC client (examples/grpc_client.py) runs the models directly on Triton."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.conftest import DET_MODEL
from tests.triton.harness import ROOT, TritonServer


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """examples/grpc_client.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("grpc_client_example", ROOT / "examples" / "grpc_client.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((160, 120), Image.BILINEAR).save(path)
    return path


def test_segmentation_histogram(example: ModuleType, triton_server: TritonServer, model_repo: Path,
                                photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The printed histogram is the argmax histogram of the ONNX graph's logits for that input."""
    result = example.main(["--url", triton_server.grpc_url, "--model", "seg_pascal", str(photo)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    meta = json.loads((model_repo / "seg_pascal" / "hrnet.json").read_text())
    pixels = example.segmentation_input(example.load_rgb(str(photo)), meta["segmentation"]["base_size"])
    assert result["input_shape"] == list(pixels.shape)
    session = ort.InferenceSession(str(model_repo / "seg_pascal" / "1" / "model.onnx"))
    logits = session.run(None, {"image": pixels})[0]
    assert result["logits_shape"] == list(logits.shape)
    counts = np.bincount(logits[0].argmax(0).ravel(), minlength=len(meta["labels"]))
    expected = {meta["labels"][i]: round(float(c) / counts.sum(), 4) for i, c in enumerate(counts) if c}
    assert result["histogram"] == expected
    assert len(expected) > 1
    assert abs(sum(result["histogram"].values()) - 1.0) < 1e-2


def test_landmarks(example: ModuleType, triton_server: TritonServer, model_repo: Path, photo: Path) -> None:
    """68 landmarks inside the (padded) crop, equal to decoding the ONNX heatmaps locally."""
    result = example.main(["--url", triton_server.grpc_url, "--model", "face_300w", str(photo)])
    points = np.asarray(result["landmarks"])
    assert points.shape == (68, 2)
    assert result["heatmaps_shape"] == [1, 68, 64, 64]
    pixels, side, left, top = example.face_input(example.load_rgb(str(photo)))
    session = ort.InferenceSession(str(model_repo / "face_300w" / "1" / "model.onnx"))
    heatmaps = session.run(None, {"image": pixels})[0]
    expected = example.decode_heatmaps(heatmaps[0], side, left, top)
    assert np.abs(points - expected).max() <= 1e-3
    assert (points[:, 0] >= left).all() and (points[:, 0] <= left + side).all()
    assert (points[:, 1] >= top).all() and (points[:, 1] <= top + side).all()


def test_unknown_model_fails_clearly(example: ModuleType, triton_server: TritonServer) -> None:
    """A model Triton does not serve is reported, not crashed on."""
    with pytest.raises((SystemExit, Exception)) as info:
        example.run(triton_server.grpc_url, "no_such_model")
    assert "no_such_model" in str(info.value)


def test_detection(example: ModuleType, triton_server: TritonServer, serving_repo: Path, photo: Path) -> None:
    """Resize by the mmcv rule, mean-pixel padding to 32, both inputs sent; the printed top
    detections equal ONNX Runtime's on the same input, mapped back to original pixels."""
    result = example.main(["--url", triton_server.grpc_url, "--model", DET_MODEL, "--top", "5",
                           str(photo)])
    meta = json.loads((serving_repo / DET_MODEL / "hrnet.json").read_text())
    assert tuple(meta["detection"]["max_size"]) == (480, 320)
    rgb = example.load_rgb(str(photo))
    pixels, size, scale_xy = example.detection_input(rgb, meta)
    # 160 x 120 in 480 x 320: scale min(480/160, 320/120) = 8/3 -> 427 x 320, padded to 448 x 320.
    assert size.tolist() == [[320, 427]] and size.dtype == np.int64
    assert pixels.shape == (1, 3, 320, 448) and scale_xy == (8 / 3, 8 / 3)
    mean = np.asarray(meta["normalization"]["mean"], np.float32) * meta["normalization"]["pixel_scale"]
    assert np.array_equal(pixels[0, :, :, 427:], np.broadcast_to(mean[:, None, None], (3, 320, 21)))
    assert result["input_shape"] == [1, 3, 320, 448] and result["image_size"] == [320, 427]
    assert result["original_size"] == [120, 160]

    session = ort.InferenceSession(str(serving_repo / DET_MODEL / "1" / "model.onnx"))
    boxes, scores, labels = session.run(None, {"image": pixels, "image_size": size})
    assert result["num_detections"] == scores.shape[1] > 0
    expected = example.boxes_to_original(boxes[0], (320, 427), scale_xy, True, 160, 120)
    top = result["detections"]
    assert len(top) == min(5, scores.shape[1])
    for i, det in enumerate(top):
        label = int(labels[0, i])
        assert det["label_index"] == label and 1 <= label <= 80
        assert det["label"] == meta["labels"][label]
        assert det["category_id"] == meta["label_ids"][label]
        assert abs(det["score"] - float(scores[0, i])) <= 1e-6
        assert np.abs(np.asarray(det["box"]) - expected[i]).max() <= 1e-3
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120

    # The valid region's inclusive corners (0, 0, 426, 319) cover the whole original image.
    whole = example.boxes_to_original(np.array([[0, 0, 426, 319]]), (320, 427), scale_xy, True, 160, 120)
    assert np.allclose(whole, [[0, 0, 160, 120]])
    # Without OpenCV the resize keeps mmcv's geometry, within one grey level.
    exact = example.resize_bilinear(rgb, 320, 427)
    fallback = example.resize_bilinear(rgb, 320, 427, use_cv2=False)
    assert np.abs(exact.astype(int) - fallback.astype(int)).max() <= 1

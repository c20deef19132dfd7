"""Passes with several named inputs (detection's ``image`` + ``image_size``) through the runner."""

from __future__ import annotations

import asyncio

import numpy as np

from service.contract import DetectionMetadata, ModelMetadata
from service.runtime.runner import InferenceRunner
from service.settings import Settings
from service.tasks import detection
from service.tasks.detection.schemas import DetectOptions
from tests.helpers import limits


class RecordingBackend:
    """Echoes each batch: ``boxes`` = image_size per item, ``scores`` = the image's first pixel."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[dict[str, tuple]] = []

    async def infer(self, model, inputs):
        self.calls.append({k: (v.shape, v.dtype.str) for k, v in inputs.items()})
        out = {"scores": inputs["image"][:, 0, 0, :1]}
        if "image_size" in inputs:
            out["boxes"] = inputs["image_size"].astype(np.float32)
        return out


def _meta(max_batch: int, with_size: bool = True) -> ModelMetadata:
    inputs = [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]}]
    if with_size:
        inputs.append({"name": "image_size", "dtype": "INT64", "dims": [2]})
    return DetectionMetadata.model_validate({
        "name": "det", "task": "detection", "arch": "hrnetv2p_w18", "dataset": "coco",
        "labels": ["__background__", "person"], "align_corners": False,
        "max_batch_size": max_batch, "inputs": inputs,
        "normalization": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                          "pixel_scale": 1.0},
        "outputs": [{"name": "boxes", "dtype": "FP32", "dims": [-1, 4]}],
        "detection": {"max_size": [64, 32]},
        "weights": {"random_init": True, "origin": "random-init", "format": "random-init"},
        "export": {"model_export_version": "0", "torch": "0", "onnx": "0", "opset": 18,
                   "exported_at": "now"},
    })


def _pass(value: float, hw: tuple[int, int], size: tuple[int, int]) -> dict[str, np.ndarray]:
    return {"image": np.full((3, *size), value, np.float32),
            "image_size": np.asarray(hw, np.int64)}


def test_named_inputs_are_batched_by_all_shapes_and_returned_in_order() -> None:
    be = RecordingBackend()
    runner = InferenceRunner(be, Settings(max_batch=4))
    passes = [_pass(1, (30, 60), (32, 64)), _pass(2, (32, 50), (32, 64)),
              _pass(3, (60, 30), (64, 32)), _pass(4, (31, 64), (32, 64))]
    out = asyncio.run(runner.run(_meta(4), passes))
    # two groups: the three 32x64 images in one batch, the 64x32 one alone
    assert sorted(c["image"][0] for c in be.calls) == [(1, 3, 64, 32), (3, 3, 32, 64)]
    for call in be.calls:
        assert call["image_size"] == ((call["image"][0][0], 2), "<i8")
    assert [o["boxes"].tolist() for o in out] == [[30, 60], [32, 50], [60, 30], [31, 64]]
    assert [float(o["scores"][0]) for o in out] == [1, 2, 3, 4]


def test_single_array_passes_still_work_next_to_named_ones() -> None:
    be = RecordingBackend()
    runner = InferenceRunner(be, Settings(max_batch=8))
    out = asyncio.run(runner.run(_meta(8, with_size=False),
                                 [np.full((3, 8, 8), 5, np.float32), {"image": np.full((3, 8, 8), 6, np.float32)}]))
    assert be.calls == [{"image": ((2, 3, 8, 8), "<f4")}]
    assert [float(o["scores"][0]) for o in out] == [5, 6]


def test_detect_passes_send_image_size_when_the_model_takes_it() -> None:
    image = np.zeros((50, 90, 3), np.uint8)  # fits 64x32 at scale 32/50: 32 x 58 (int(57.6+.5))
    opts = DetectOptions(flip=True)

    def passes(meta):  # the task's own plan of this image
        req = detection.TASK.resolve(opts, {}, meta, limits())
        return detection.TASK.plan(req, meta, image.shape[:2]).passes(image)

    a, b = passes(_meta(1))
    inputs = a
    assert inputs["image"].shape == (3, 32, 64)
    assert inputs["image_size"].dtype == np.int64 and inputs["image_size"].tolist() == [32, 58]
    assert b["image_size"].tolist() == [32, 58]  # flipped pass: same size
    # padding is the mean pixel (the official zero after normalisation)
    np.testing.assert_allclose(inputs["image"][:, 0, 60], [123.675, 116.28, 103.53], rtol=1e-6)
    assert set(passes(_meta(1, with_size=False))[0]) == {"image"}  # older entries: image only

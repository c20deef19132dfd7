"""The repository contract: one metadata class per task, chosen by ``task``; schema 1 upgraded."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from service.contract import (
    SCHEMA_VERSION, DetectionMetadata, LandmarkMetadata, ModelMetadata, SegmentationMetadata,
    rescale_size,
)

_COMMON = {
    "name": "m", "arch": "a", "dataset": "d", "labels": ["x", "y"], "align_corners": False,
    "max_batch_size": 1, "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]}],
    "outputs": [{"name": "logits", "dtype": "FP32", "dims": [2, -1, -1]}],
    "weights": {"random_init": True, "origin": "random-init", "format": "random-init"},
    "export": {"model_export_version": "0", "torch": "0", "onnx": "0", "opset": 18,
               "exported_at": "now"},
}
_SEG = {"base_size": 64, "crop_size": [32, 64], "window": "cityscapes", "multi_scales": [1.0]}


def _schema1(task: str, **protocols) -> str:
    """A document as hrnet-serve 0.1 wrote it: every protocol key present, unread constants."""
    doc = {**_COMMON, "schema_version": 1, "task": task,
           "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2],
                             "pixel_scale": 255.0, "in_graph": True, "channel_order": "RGB"},
           "segmentation": None, "landmarks": None, "detection": None}
    doc.update(protocols)
    return json.dumps(doc)


def test_each_task_parses_into_its_class() -> None:
    seg = ModelMetadata.from_json(_schema1("segmentation", segmentation=_SEG))
    assert isinstance(seg, SegmentationMetadata) and seg.protocol is seg.segmentation
    assert seg.segmentation.crop_size == (32, 64) and seg.schema_version == SCHEMA_VERSION == 3
    lm = ModelMetadata.from_json(_schema1("landmarks", landmarks=None))
    assert isinstance(lm, LandmarkMetadata) and lm.landmarks.scale_unit == 200.0
    det = ModelMetadata.from_json(_schema1("detection", detection={
        "max_size": [640, 480], "boxes_in": "network_input"}))
    assert isinstance(det, DetectionMetadata) and det.detection.max_size == (640, 480)
    assert ModelMetadata.from_json(det.to_json()) == det


def test_schema1_upgrade_only_drops_what_it_knows() -> None:
    with pytest.raises(ValidationError):  # a segmentation model needs its protocol
        ModelMetadata.from_json(_schema1("segmentation"))
    with pytest.raises(ValidationError):  # boxes in another frame were never served
        ModelMetadata.from_json(_schema1("detection", detection={"boxes_in": "original"}))
    with pytest.raises(ValidationError):  # schema 2 has no such fields
        SegmentationMetadata.from_json(json.dumps({**_COMMON, "task": "segmentation",
                                                   "segmentation": {**_SEG, "extra": 1}}))


def test_task_class_is_checked() -> None:
    text = _schema1("segmentation", segmentation=_SEG)
    with pytest.raises(ValueError, match="not a DetectionMetadata"):
        DetectionMetadata.from_json(text)


def test_rescale_size_is_mmcv_imrescale() -> None:
    assert rescale_size(480, 640, (1333, 800)) == (800, 1067, 800 / 480)
    assert rescale_size(1000, 100, (1333, 800))[:2] == (1333, 133)


def test_documents_before_precision_tiers_are_fp32_on_onnxruntime() -> None:
    """Schema 1 and 2 documents (written before the precision block) load as FP32 on ONNX
    Runtime, upgraded to the current schema; a schema 3 document round-trips its tier."""
    from service.contract import PrecisionInfo, TierDeltas

    schema2 = json.dumps({**_COMMON, "schema_version": 2, "task": "segmentation",
                          "segmentation": _SEG})
    for text in (schema2, _schema1("segmentation", segmentation=_SEG)):
        meta = ModelMetadata.from_json(text)
        assert meta.schema_version == SCHEMA_VERSION
        assert meta.precision == PrecisionInfo()
        assert (meta.precision.precision, meta.precision.engine) == ("fp32", "onnxruntime")
    tier = ModelMetadata.from_json(schema2).model_copy(update={"precision": PrecisionInfo(
        precision="int8", engine="openvino", base_model="m", calibration="2 photos",
        deltas=TierDeltas(images=3, sources=["parity photos"], label_agreement=0.99,
                          class_agreement={"x": 0.9}))})
    assert ModelMetadata.from_json(tier.to_json()) == tier
    with pytest.raises(ValidationError):  # an unknown precision or engine is refused
        ModelMetadata.from_json(json.dumps({**json.loads(tier.to_json()),
                                            "precision": {"precision": "fp8"}}))

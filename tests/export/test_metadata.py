"""The metadata writer: protocol overrides, align_corners defaults and ModelMetadata documents."""

from __future__ import annotations

import json

import pytest

from model_export.datasets import CITYSCAPES_TRAINID_TO_ID, get_dataset
from model_export.metadata import build_metadata, default_align_corners, segmentation_protocol
from service.contract import ExportInfo, ModelMetadata, WeightsInfo


def _weights(random_init: bool = True) -> WeightsInfo:
    if random_init:
        return WeightsInfo(random_init=True, origin="random-init", format="random-init")
    return WeightsInfo(random_init=False, origin="official", format="official-seg", file="x.pth", sha256="0" * 64)


def _export() -> ExportInfo:
    return ExportInfo(model_export_version="0", torch="t", onnx="o", opset=18, exported_at="2024-01-01T00:00:00+00:00")


def test_protocol_overrides() -> None:
    lip = segmentation_protocol(get_dataset("lip"), base_size=96)
    assert (lip.base_size, lip.resize_to_square, tuple(lip.crop_size)) == (96, 96, (96, 96))
    cs = segmentation_protocol(get_dataset("cityscapes"), base_size=1024, crop_size=(512, 1024))
    assert (cs.base_size, tuple(cs.crop_size), cs.window) == (1024, (512, 1024), "cityscapes")
    with pytest.raises(ValueError):
        segmentation_protocol(get_dataset("300w"))


def test_align_corners_defaults_by_origin() -> None:
    for origin in ("official", "hrnet-ocr", "mmseg", "mmpose", "random-init"):
        assert default_align_corners(origin) is False


def test_build_metadata_segmentation_round_trip() -> None:
    meta = build_metadata(
        name="m", task="segmentation", arch="hrnetv2_w48", dataset="cityscapes",
        weights=_weights(False), export=_export(), max_batch_size=4, base_size=1024, crop_size=(512, 1024),
    )
    assert meta.inputs[0].name == "image" and meta.inputs[0].dims == [3, -1, -1]
    assert meta.outputs[0].name == "logits" and meta.outputs[0].dims == [19, -1, -1]
    assert meta.align_corners is False and meta.label_ids == CITYSCAPES_TRAINID_TO_ID
    assert any("official 2048" in n for n in meta.notes), "the reduced protocol must be noted"
    again = ModelMetadata.from_json(meta.to_json())
    assert again == meta
    assert json.loads(meta.to_json())["segmentation"]["crop_size"] == [512, 1024]


def test_build_metadata_landmarks_random_init() -> None:
    meta = build_metadata(
        name="f", task="landmarks", arch="hrnetv2_w18", dataset="300w",
        weights=_weights(True), export=_export(), max_batch_size=8, align_corners=True,
    )
    assert meta.outputs[0].name == "heatmaps" and meta.outputs[0].dims == [68, 64, 64]
    assert meta.inputs[0].dims == [3, 256, 256]
    assert meta.align_corners is True  # explicit override wins
    assert meta.weights.random_init and "RANDOM-INIT" in meta.notes[0]
    assert ModelMetadata.from_json(meta.to_json()) == meta


def test_build_metadata_rejects_task_mismatch() -> None:
    with pytest.raises(ValueError, match="landmarks"):
        build_metadata(name="x", task="segmentation", arch="hrnetv2_w18", dataset="300w",
                       weights=_weights(), export=_export(), max_batch_size=1)

"""Detection checkpoint formats: HRNet-Object-Detection (v0.6), MMDetection 1.x and 2.x/3.x."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_export.archs import backbone_config
from model_export.checkpoints import inspect_checkpoint, load_checkpoint
from model_export.checkpoints.detection import convert_detection_state_dict, inspect_detection
from model_export.checkpoints.matching import CheckpointError
from model_export.checkpoints.reading import file_sha256
from model_export.nets.detection import build_faster_rcnn
from model_export.onnx.detection import photo_input
from model_export.random_init import make_demo_detector
from tests.conftest import DET_FAST as FAST
from tests.helpers import save_checkpoint, to_checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    return make_demo_detector(build_faster_rcnn(backbone_config("hrnetv2_w18"), **FAST), seed=1)


@pytest.mark.parametrize("fmt,origin,neck_key,cls_key", [
    ("hrnet-det", "official", "neck.reduction_conv.0.weight", "bbox_head.fc_cls.weight"),
    ("mmdet-v1", "mmdet-legacy", "neck.reduction_conv.conv.weight", "bbox_head.fc_cls.weight"),
    ("mmdet-v2", "mmdet", "neck.fpn_convs.4.conv.weight", "roi_head.bbox_head.fc_cls.weight"),
])
def test_each_format_loads_strictly(source, tmp_path: Path, fmt: str, origin: str, neck_key: str,
                                    cls_key: str) -> None:
    ck = to_checkpoint(source, fmt)
    assert neck_key in ck["state_dict"] and cls_key in ck["state_dict"]
    assert "rpn_head.rpn_cls.weight" in ck["state_dict"]
    path = save_checkpoint(ck, tmp_path / f"{fmt}.pth")
    info = inspect_detection(ck)
    assert (info.format, info.origin, info.arch, info.num_outputs) == (fmt, origin,
                                                                       "hrnetv2p_w18", 81)
    model = build_faster_rcnn(backbone_config("hrnetv2_w18"), **FAST)
    report = load_checkpoint(model, path)
    assert report.info.sha256 and report.loaded > 1500
    ref, got = source.state_dict(), model.state_dict()
    if fmt == "mmdet-v2":  # no background box deltas in 2.x+ files: zero rows (never decoded)
        for k in ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"):
            assert not got[k][:4].any()
            ref[k], got[k] = ref[k][4:], got[k][4:]
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []


def test_mmdet_v2_background_last_is_remapped(source) -> None:
    sd = to_checkpoint(source, "mmdet-v2")["state_dict"]
    cls = sd["roi_head.bbox_head.fc_cls.weight"]
    assert cls.shape == (81, 1024) and sd["roi_head.bbox_head.fc_reg.weight"].shape == (320, 1024)
    torch.testing.assert_close(cls[80], source.roi_heads.box_predictor.cls_score.weight[0])
    torch.testing.assert_close(cls[0], source.roi_heads.box_predictor.cls_score.weight[1])


def test_converted_model_reproduces_outputs(source) -> None:
    model = build_faster_rcnn(backbone_config("hrnetv2_w18"), **FAST)
    sd, _ = convert_detection_state_dict(to_checkpoint(source, "mmdet-v2"), model)
    model.load_state_dict(sd)
    x, hw = photo_input("chelsea", (256, 384))
    with torch.no_grad():
        ref, got = source(x, hw), model(x, hw)
    assert len(ref[0]) > 0
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


def test_errors_list_missing_unexpected_and_misshaped(source) -> None:
    ck = to_checkpoint(source, "mmdet-v2")
    sd = ck["state_dict"]
    del sd["neck.fpn_convs.2.conv.bias"]
    sd["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(91, 1024)
    sd["roi_head.extra.weight"] = torch.zeros(1)
    model = build_faster_rcnn(backbone_config("hrnetv2_w18"))
    with pytest.raises(CheckpointError) as exc:
        convert_detection_state_dict(ck, model)
    msg = str(exc.value)
    assert "backbone.neck.fpn_conv.2.bias" in exc.value.missing
    assert "roi_head.extra.weight" in exc.value.unexpected
    assert exc.value.mismatched[0][0] == "roi_heads.box_predictor.cls_score.weight"
    assert "missing keys (1)" in msg and "mis-shaped" in msg


def test_generic_inspect_recognises_detection_files(source, tmp_path: Path) -> None:
    path = save_checkpoint(to_checkpoint(source, "hrnet-det"), tmp_path / "FasterR-CNN-HR18-1x.pth")
    info = inspect_checkpoint(path)
    assert (info.format, info.origin, info.task, info.arch, info.num_outputs) == (
        "hrnet-det", "official", "detection", "hrnetv2p_w18", 81)
    assert info.sha256 == file_sha256(path) and info.backbone["width"] == 18
    text = info.summary()
    for part in ("hrnet-det", "detection", "hrnetv2p_w18", "81 (80 + background)", "'legacy'",
                 "--task detection --arch hrnetv2p_w18 --dataset coco"):
        assert part in text, part


def test_not_a_detection_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="not an HRNetV2p Faster R-CNN"):
        inspect_detection({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}})


def test_two_file_keys_for_one_tensor_are_rejected(source) -> None:
    """A file naming one model tensor twice (v0.6 and 1.x neck names) must not load silently."""
    ck = to_checkpoint(source, "hrnet-det")
    sd = ck["state_dict"]
    sd["neck.fpn_convs.0.conv.weight"] = torch.zeros_like(sd["neck.fpn_conv.0.weight"])
    model = build_faster_rcnn(backbone_config("hrnetv2_w18"), **FAST)
    with pytest.raises(CheckpointError) as exc:
        convert_detection_state_dict(ck, model)
    assert any("neck.fpn_convs.0.conv.weight" in u and "duplicate" in u
               for u in exc.value.unexpected), exc.value.unexpected

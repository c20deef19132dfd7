"""Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN: layers, strict loading of every released
format, and the session exports (parity of boxes, scores and masks gates them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_export.archs import build_model, list_archs, split_detection_arch
from model_export.checkpoints import inspect_checkpoint, load_checkpoint
from model_export.checkpoints.detection import convert_detection_state_dict, inspect_detection
from model_export.checkpoints.matching import CheckpointError
from model_export.checkpoints.reading import file_sha256
from model_export.onnx.detection import PARITY_IMAGES
from tests.conftest import (
    CASCADE_MASK_MODEL, DET_FAST, INSTANCE_MODELS, LAYOUT_TWINS, MASK_MODEL, TWIN_PARITY_IMAGES,
    instance_source,
)
from tests.helpers import save_checkpoint, to_checkpoint

torch.set_num_threads(1)

ARCHS = ("mask_rcnn_hrnetv2p_w18", "cascade_rcnn_hrnetv2p_w32", "cascade_mask_rcnn_hrnetv2p_w18")
# format written -> (format recognised, origin, box arithmetic)
FORMATS = {"hrnet-det": ("hrnet-det", "official", "legacy"),
           "mmdet-v2": ("mmdet-v2", "mmdet", "continuous"),
           "mmdet-v3": ("mmdet-v2", "mmdet", "continuous")}


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module", params=ARCHS)
def source(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    return request.param, instance_source(request.param, seed=3)


def test_registry_names_every_head() -> None:
    archs = list_archs("detection")
    assert archs[:4] == ["hrnetv2p_w18", "hrnetv2p_w32", "hrnetv2p_w40", "hrnetv2p_w48"]
    assert {"mask_rcnn_hrnetv2p_w18", "cascade_rcnn_hrnetv2p_w32",
            "cascade_mask_rcnn_hrnetv2p_w48"} <= set(archs)
    assert split_detection_arch("cascade_mask_rcnn_hrnetv2p_w32") == ("cascade_mask_rcnn",
                                                                      "hrnetv2p_w32")
    with pytest.raises(ValueError, match="unknown detection arch"):
        split_detection_arch("mask_rcnn_resnet50")


def test_parameter_counts_from_official_layers() -> None:
    faster = 27_486_776  # HRNetV2p-W18 Faster R-CNN (tests/export/test_detection_model.py)
    # FCN mask head: 4 x 3x3 256->256 (590,080) + 2x2 deconv 256->256 (262,400) + 1x1 to 81
    mask_head = 4 * 590_080 + 262_400 + (256 * 81 + 81)
    assert _params(build_model("detection", "mask_rcnn_hrnetv2p_w18", 81)) == faster + mask_head
    # Cascade: three class-agnostic box heads (fc6, fc7, fc_cls 81, fc_reg 4) replace the one
    # class-specific head (fc_cls 81, fc_reg 324).
    box_head = (256 * 49 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 81 + 81)
    cascade = faster - (box_head + 1024 * 324 + 324) + 3 * (box_head + 1024 * 4 + 4)
    assert _params(build_model("detection", "cascade_rcnn_hrnetv2p_w18", 81)) == cascade
    assert _params(build_model("detection", "cascade_mask_rcnn_hrnetv2p_w18", 81)) == (
        cascade + 3 * mask_head)


@pytest.mark.parametrize("fmt", [*FORMATS, "mmdet-v1"])
def test_every_format_loads_strictly(source, fmt: str, tmp_path: Path) -> None:
    arch, model_src = source
    ck = to_checkpoint(model_src, fmt)
    keys = ck["state_dict"]
    head = split_detection_arch(arch)[0]
    roi = "roi_head." if fmt.startswith("mmdet-v") and fmt != "mmdet-v1" else ""
    if head.startswith("cascade"):
        assert f"{roi}bbox_head.2.fc_reg.weight" in keys
        assert keys[f"{roi}bbox_head.2.fc_reg.weight"].shape == (4, 1024)  # class-agnostic
    if head.endswith("mask_rcnn"):
        stage = "2." if head.startswith("cascade") else ""
        logits = keys[f"{roi}mask_head.{stage}conv_logits.weight"]
        assert logits.shape[0] == (80 if roi else 81)  # 2.x+: no background channel
        assert f"{roi}mask_head.{stage}convs.3.conv.weight" in keys
    path = save_checkpoint(ck, tmp_path / "ck.pth")
    recognised, origin, convention = FORMATS.get(fmt, ("mmdet-v1", "mmdet-legacy", "legacy"))
    info = inspect_checkpoint(path)
    assert (info.format, info.origin, info.arch, info.num_outputs) == (recognised, origin, arch, 81)
    assert f"--arch {arch}" in info.summary()
    model = build_model("detection", arch, 81, convention=convention, **DET_FAST)
    report = load_checkpoint(model, path)
    ref, got = model_src.state_dict(), model.state_dict()
    zero_rows = {k for k in report.filled if "[" in k}
    for key in zero_rows:  # 2.x+ background rows: zero, never used; the rest must be equal
        name, rows = key.split("[")
        n = int(rows.split(":")[-1].rstrip("]")) if ":" in rows else 1
        assert not got[name][:n].any()
        ref[name], got[name] = ref[name][n:], got[name][n:]
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []
    expected_zero = set()
    if roi:
        if head == "mask_rcnn":
            expected_zero |= {f"roi_heads.box_predictor.bbox_pred.{p}[0:4]" for p in ("weight", "bias")}
        if head.endswith("mask_rcnn"):
            expected_zero |= {f"mask_heads.{s}.conv_logits.{p}[0]" for p in ("weight", "bias")
                              for s in range(3 if head.startswith("cascade") else 1)}
    assert zero_rows == expected_zero


def test_mask_file_into_box_model_ignores_masks_and_cascade_into_faster_fails(source) -> None:
    arch, model_src = source
    head, base = split_detection_arch(arch)
    ck = to_checkpoint(model_src, "hrnet-det")
    box_only = build_model("detection", f"cascade_rcnn_{base}" if head.startswith("cascade")
                           else base, 81, **DET_FAST)
    if head.endswith("mask_rcnn"):
        _, report = convert_detection_state_dict(ck, box_only)
        assert any("mask head" in r for r in report.ignored.values())
    faster = build_model("detection", base, 81, **DET_FAST)
    if head.startswith("cascade"):
        with pytest.raises(CheckpointError) as exc:
            convert_detection_state_dict(ck, faster)
        assert any("bbox_head.0.fc_cls" in u for u in exc.value.unexpected)
        assert "cascade_" in str(exc.value) and "hrnetv2p_w" in str(exc.value)


def test_inspect_notes_name_the_head() -> None:
    src = instance_source("cascade_mask_rcnn_hrnetv2p_w18")
    text = inspect_detection(to_checkpoint(src, "mmdet-v3")).summary()
    for part in ("Cascade Mask R-CNN from MMDetection 2.x/3.x", "3 box stages",
                 "mean of the stages' logits", "paste_masks_in_image",
                 "--arch cascade_mask_rcnn_hrnetv2p_w18"):
        assert part in text, part


@pytest.mark.parametrize("name", list(INSTANCE_MODELS))
def test_session_exports_passed_parity(instance_exports, name: str) -> None:
    from service.contract import ModelMetadata

    result = instance_exports[name]
    arch, fmt = INSTANCE_MODELS[name]
    head = split_detection_arch(arch)[0]
    entry = result.entry.entry_dir
    meta = ModelMetadata.from_json((entry / "hrnet.json").read_text())
    parity = json.loads((entry / "parity.json").read_text())
    assert parity["passed"] and parity["dynamic_size_checked"]
    assert [c["image"] for c in parity["cases"]] == (
        list(TWIN_PARITY_IMAGES) if name in LAYOUT_TWINS else list(PARITY_IMAGES))
    assert all(c["reference"] > 0 and c["match_rate"] >= 0.95 for c in parity["cases"])
    det = meta.detection
    assert meta.arch == arch and det.head == head
    assert det.cascade_stages == (3 if head.startswith("cascade") else 1)
    assert meta.weights.format == FORMATS[fmt][0] and not meta.weights.random_init
    # exported from its own synthesised file (nine files, nine digests)
    ck = Path(result.request.checkpoint)
    assert meta.weights.file == ck.name == f"{name}.pth"
    assert meta.weights.sha256 == file_sha256(ck)
    assert len({r.metadata.weights.sha256 for r in instance_exports.values()}) == len(INSTANCE_MODELS)
    assert det.box_convention == ("legacy_plus_one" if fmt == "hrnet-det" else "continuous")
    outputs = [(o.name, o.dims) for o in meta.outputs]
    if head.endswith("mask_rcnn"):
        assert outputs[-1] == ("masks", [-1, 28, 28])
        assert det.masks.paste == ("legacy" if fmt == "hrnet-det" else "grid_sample")
        assert all(c["min_mask_iou"] >= 0.99 for c in parity["cases"])
    else:
        assert [o[0] for o in outputs] == ["boxes", "scores", "labels"] and det.masks is None
        assert all(c["min_mask_iou"] is None for c in parity["cases"])
    if head.startswith("cascade"):
        assert any("mean of the stages' logits" in n for n in meta.notes)


def test_mask_branch_exports_and_runs_with_no_detections(tmp_path: Path) -> None:
    """The mask RoIAlign + FCN head traced with detections runs in ONNX Runtime with K = 0 (an
    image without detections) and agrees with torch on K > 0."""
    import warnings

    import numpy as np
    import onnxruntime as ort

    from model_export.nets.detection import LevelRoIAlign
    from model_export.nets.instance import FCNMaskHead

    class Branch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = LevelRoIAlign((4, 8, 16, 32), 14, 2, False, 56, 1.0)
            self.head = FCNMaskHead(81, 16, 4, 16)

        def forward(self, f0, f1, f2, f3, boxes, labels):  # noqa: ANN001, ANN201
            feats = self.pool({"0": f0, "1": f1, "2": f2, "3": f3}, [boxes])
            return torch.sigmoid(self.head(feats, labels))

    torch.manual_seed(0)
    branch = Branch().eval()
    feats = [torch.randn(1, 16, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)]
    boxes, labels = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 200.0, 200.0]]), torch.tensor([3, 5])
    names = ["f0", "f1", "f2", "f3", "boxes", "labels"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(branch, (*feats, boxes, labels), str(tmp_path / "m.onnx"), dynamo=False,
                          opset_version=18, input_names=names,
                          dynamic_axes={"boxes": {0: "k"}, "labels": {0: "k"}})
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {f"f{i}": f.numpy() for i, f in enumerate(feats)}
    got = sess.run(None, {**feed, "boxes": boxes.numpy(), "labels": labels.numpy()})[0]
    with torch.no_grad():
        ref = branch(*feats, boxes, labels).numpy()
    # the per-class dot product equals the full conv_logits channel of the label
    with torch.no_grad():
        y = branch.head.features(branch.pool({str(i): f for i, f in enumerate(feats)}, [boxes]))
        full = torch.sigmoid(branch.head.conv_logits(y))[torch.arange(2), labels].numpy()
    np.testing.assert_allclose(ref, full, atol=1e-6)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    empty = sess.run(None, {**feed, "boxes": np.zeros((0, 4), np.float32),
                            "labels": np.zeros(0, np.int64)})[0]
    assert empty.shape == (0, 28, 28)


@pytest.mark.parametrize("name", [MASK_MODEL, CASCADE_MASK_MODEL])
def test_tensorrt_path_of_the_mask_heads_is_faster_rcnns(instance_exports, name: str,
                                                          tmp_path: Path) -> None:
    """Mask heads take Faster R-CNN's TensorRT path: no plan (NMS, RoIAlign and the mask branch
    have data-dependent shapes; the request fails before any work, nothing written), but a GPU
    entry with Triton's ONNX Runtime TensorRT accelerator in FP16, serving all four outputs
    (``masks`` included) and warmed up with its ``image_size`` file; the embedded backend runs
    them on CUDA, never offering them to the TensorRT provider."""
    from dataclasses import replace

    from model_export.errors import ExportError
    from model_export.pipeline import export_model
    from model_export.precision.tiers import PrecisionOptions
    from model_export.repository import TritonOptions, build_model_config, config_to_text, warmup_files
    from service.contract import IMAGE_SIZE
    from service.runtime.backends.providers import (
        CPU, CUDA, TENSORRT, choose_providers, session_providers,
    )
    from service.runtime.profiles import compute_profile
    from service.settings import Settings

    result = instance_exports[name]
    meta = result.metadata
    for extra in ({"tensorrt_plan": True}, {"precision": PrecisionOptions(tensorrt=("fp32", "fp16"))}):
        req = replace(result.request, repo=tmp_path / "repo", **extra)
        with pytest.raises(ExportError, match="TensorRT plans are not built for detection .*"
                                              "--tensorrt-accelerator fp16"):
            export_model(req, log=lambda _m: None)
    assert not (tmp_path / "repo").exists()
    with pytest.raises(ValueError, match="no TensorRT profile rule for task 'detection'"):
        compute_profile(meta)

    gpu = TritonOptions(instance_kind="gpu", tensorrt_fp16=True)
    cfg = build_model_config(meta, gpu)
    assert [(o.name, list(o.dims)) for o in cfg.output] == [
        ("boxes", [-1, 4]), ("scores", [-1]), ("labels", [-1]), ("masks", [-1, 28, 28])]
    assert cfg.max_batch_size == 1 and cfg.platform == "onnxruntime_onnx"
    (group,) = cfg.instance_group
    assert group.kind == group.KIND_GPU
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    (warm,) = cfg.model_warmup
    data = warm.inputs[IMAGE_SIZE].input_data_file
    assert data in warmup_files(meta, gpu) and '"masks"' in config_to_text(cfg)

    settings = Settings(ort_providers=[TENSORRT, CUDA, CPU], ort_tensorrt_fp16=True)
    providers = session_providers(choose_providers(settings, [TENSORRT, CUDA, CPU]), meta, settings)
    assert providers == [CUDA, CPU]

"""ONNX export of HRNetV2p Faster R-CNN with all post-processing inside the graph, its parity check,
and the repository metadata.

Graph I/O (one image per call; Triton ``max_batch_size: 1``):

* ``image``  FP32 ``[1, 3, H, W]``: RGB pixels 0..255 of the resized image, padded bottom/right to
  multiples of 32 with the *mean pixel* (mmdet pads the normalised image with 0);
* ``boxes``  FP32 ``[1, K, 4]``: ``x1, y1, x2, y2`` in network-input pixels (legacy models:
  inclusive corners, ``w = x2 - x1 + 1``);
* ``scores`` FP32 ``[1, K]``, sorted descending; ``labels`` INT64 ``[1, K]`` indexing
  ``metadata.labels`` (0 is the background and never emitted, COCO classes are 1..80).

Inside: normalisation, backbone, HRFPN, RPN (per-level top-n, NMS 0.7, top-n), RoIAlign, box head,
class-specific decoding, score threshold, per-class NMS and the top ``detections_per_img``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from model_export.coco import COCO_LABEL_IDS, COCO_LABELS
from model_export.detection import PIXEL_MEAN, PIXEL_STD, HRNetFasterRCNN
from service.metadata import (
    DetectionProtocol,
    ExportInfo,
    ModelMetadata,
    Normalization,
    TensorSpec,
    WeightsInfo,
)

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
DETECTION_OPSET = 17  # RoiAlign with half-pixel (aligned=True) needs opset >= 16
TRACE_SIZE = (320, 480)
PARITY_SIZES: tuple[tuple[int, int], ...] = ((320, 480), (480, 320))


class DetectionGraph(nn.Module):
    """Batch-shaped wrapper: ``[1, 3, H, W]`` -> ``([1, K, 4], [1, K], [1, K])``."""

    def __init__(self, model: HRNetFasterRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        boxes, scores, labels = self.model(image[:1])
        return boxes[None], scores[None], labels[None]


def export_detection_onnx(model: HRNetFasterRCNN, path: str | Path, *,
                          opset: int = DETECTION_OPSET,
                          trace_size: tuple[int, int] = TRACE_SIZE) -> Path:
    """Trace ``model`` with the TorchScript exporter (``dynamo=False``) into ``path``.

    Height and width are dynamic; parity must be checked at other sizes than ``trace_size``.
    """
    if opset < 16:
        raise ValueError("detection export needs opset >= 16 (RoiAlign coordinate modes)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = trace_size
    example = photo_input("coffee", (h, w))
    graph = DetectionGraph(model.eval()).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          "boxes": {0: "batch", 1: "detections"},
                          "scores": {0: "batch", 1: "detections"},
                          "labels": {0: "batch", 1: "detections"}},
            do_constant_folding=True, external_data=False)
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    proto.producer_name = "hrnet-serve model_export"
    onnx.save(proto, str(path))
    return path


# --------------------------------------------------------------------------------------------
# Test-time input (the same rule as the gateway's service/tasks/detect.py)


def rescale_size(h: int, w: int, max_size: tuple[int, int] = (1333, 800)) -> tuple[int, int, float]:
    """mmcv ``imrescale``: scale = min(long_max / long, short_max / short); ``int(x * s + 0.5)``."""
    long_max, short_max = max(max_size), min(max_size)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5), scale


def letterbox(rgb: np.ndarray, size_divisor: int = 32) -> np.ndarray:
    """``[H, W, 3]`` pixels -> ``[1, 3, H', W']`` FP32, padded bottom/right with the mean pixel."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
    out = np.empty((ph, pw, 3), np.float32)
    out[...] = np.asarray(PIXEL_MEAN, np.float32)
    out[:h, :w] = rgb
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None])


def photo_input(name: str, max_size: tuple[int, int]) -> Tensor:
    """A scikit-image photo resized by the detection rule within ``max_size`` and letterboxed."""
    from PIL import Image
    from skimage import data

    img = np.asarray(getattr(data, name)())[..., :3]
    nh, nw, _ = rescale_size(img.shape[0], img.shape[1], max_size)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), np.float32)
    return torch.from_numpy(letterbox(resized))


# --------------------------------------------------------------------------------------------
# Parity


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Continuous IoU matrix of ``[N, 4]`` and ``[M, 4]`` boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


@dataclass
class DetectionParityCase:
    """One photo: how many of the reference detections ONNX Runtime reproduced."""

    image: str
    size: tuple[int, int]
    reference: int
    onnx: int
    matched: int
    max_score_err: float
    max_box_err: float

    @property
    def match_rate(self) -> float:
        """Matched / max(reference, onnx); 1.0 when both are empty."""
        return self.matched / max(self.reference, self.onnx, 1) if (self.reference or
                                                                    self.onnx) else 1.0


@dataclass
class DetectionParityReport:
    """Parity of the exported detection graph against PyTorch on real photos."""

    cases: list[DetectionParityCase] = field(default_factory=list)
    min_match_rate: float = 0.95
    iou: float = 0.99
    score_tol: float = 1e-3

    @property
    def passed(self) -> bool:
        """Every case reproduces >= ``min_match_rate`` of its detections within tolerance."""
        return bool(self.cases) and all(
            c.match_rate >= self.min_match_rate and c.max_score_err <= self.score_tol
            and c.reference > 0 for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the entry's ``parity.json``)."""
        return {"task": "detection", "passed": self.passed, "iou": self.iou,
                "score_tol": self.score_tol, "min_match_rate": self.min_match_rate,
                "dynamic_size_checked": True,
                "cases": [{**c.__dict__, "size": list(c.size), "match_rate": c.match_rate}
                          for c in self.cases]}


def match_detections(ref: tuple[np.ndarray, np.ndarray, np.ndarray],
                     got: tuple[np.ndarray, np.ndarray, np.ndarray], iou: float = 0.99
                     ) -> tuple[int, float, float]:
    """Greedy one-to-one matching (same label, IoU >= ``iou``) in reference score order.

    Returns (matched count, max |score diff|, max |box coordinate diff|) over matched pairs.
    """
    rb, rs, rl = ref
    gb, gs, gl = got
    if len(rb) == 0 or len(gb) == 0:
        return 0, 0.0, 0.0
    ious = box_iou(rb, gb)
    ious[rl[:, None] != gl[None, :]] = 0
    used = np.zeros(len(gb), bool)
    matched, serr, berr = 0, 0.0, 0.0
    for i in np.argsort(-rs, kind="stable"):
        cand = np.where(~used & (ious[i] >= iou))[0]
        if len(cand) == 0:
            continue
        j = cand[np.argmin(np.abs(gs[cand] - rs[i]))]
        used[j] = True
        matched += 1
        serr = max(serr, float(abs(gs[j] - rs[i])))
        berr = max(berr, float(np.abs(gb[j] - rb[i]).max()))
    return matched, serr, berr


def check_detection_parity(model: HRNetFasterRCNN, onnx_path: str | Path, *,
                           sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
                           images: Sequence[str] = ("coffee", "chelsea", "astronaut", "rocket"),
                           session: Any = None) -> DetectionParityReport:
    """Run PyTorch and ONNX Runtime on real photos (resized within each max size, letterboxed)."""
    if session is None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    report = DetectionParityReport()
    for k, name in enumerate(images):
        size = sizes[k % len(sizes)]
        x = photo_input(name, size)
        with torch.no_grad():
            ref = tuple(t.numpy() for t in model(x))
        got = tuple(o[0] for o in session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()}))
        matched, serr, berr = match_detections(ref, got, report.iou)  # type: ignore[arg-type]
        report.cases.append(DetectionParityCase(name, (int(x.shape[2]), int(x.shape[3])),
                                                len(ref[0]), len(got[0]), matched, serr, berr))
    return report


# --------------------------------------------------------------------------------------------
# Metadata


def detection_metadata(*, name: str, arch: str, model: HRNetFasterRCNN, weights: WeightsInfo,
                       export: ExportInfo, max_size: tuple[int, int] = (1333, 800),
                       notes: Sequence[str] = ()) -> ModelMetadata:
    """The repository metadata of a COCO HRNetV2p Faster R-CNN entry."""
    cfg = model.cfg
    return ModelMetadata(
        name=name, task="detection", arch=arch.replace("hrnetv2_", "hrnetv2p_"), dataset="coco",
        labels=list(COCO_LABELS), label_ids=list(COCO_LABEL_IDS),
        normalization=Normalization(mean=tuple(m / 255.0 for m in PIXEL_MEAN),  # type: ignore[arg-type]
                                    std=tuple(s / 255.0 for s in PIXEL_STD),  # type: ignore[arg-type]
                                    pixel_scale=255.0, in_graph=True),
        align_corners=False,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="FP32", dims=[3, -1, -1])],
        outputs=[TensorSpec(name="boxes", dtype="FP32", dims=[-1, 4]),
                 TensorSpec(name="scores", dtype="FP32", dims=[-1]),
                 TensorSpec(name="labels", dtype="INT64", dims=[-1])],
        max_batch_size=1,
        detection=DetectionProtocol(
            max_size=max_size, size_divisor=32, score_threshold=cfg.score_thresh,
            nms_iou=cfg.nms_thresh, max_detections=cfg.detections_per_img,
            box_convention="legacy_plus_one" if cfg.convention == "legacy" else "continuous",
            boxes_in="network_input"),
        weights=weights, export=export,
        notes=["labels: index into `labels` (0 = background, never emitted); label_ids gives the "
               "COCO category id", "input: resize by mmcv imrescale to fit max_size, pad "
               "bottom/right to size_divisor with the mean pixel", *notes])


# --------------------------------------------------------------------------------------------
# One call: build (+ load) -> export -> parity -> repository entry


def export_detection_entry(repo: str | Path, *, name: str, arch: str = "hrnetv2_w18",
                           checkpoint: str | Path | None = None, seed: int = 0,
                           max_size: tuple[int, int] = (1333, 800),
                           parity_sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
                           require_parity: bool = True, **overrides: Any) -> Path:
    """Write ``<repo>/<name>/`` for an HRNetV2p Faster R-CNN; returns the entry folder.

    Without ``checkpoint`` the network is random (``make_demo_detector``) and its metadata says
    so. The checkpoint's format sets the box arithmetic (legacy for HRNet-Object-Detection and
    MMDetection 1.x, continuous for 2.x/3.x). ``overrides`` go to ``detection_config`` (tests use
    smaller RPN budgets).
    """
    import tempfile

    from model_export.archs import backbone_config
    from model_export.checkpoints import read_checkpoint
    from model_export.detection import build_faster_rcnn, make_demo_detector
    from model_export.detection_checkpoints import (
        FORMAT_CONVENTION,
        inspect_detection,
        load_detection_checkpoint,
    )
    from model_export.pipeline import _versions
    from model_export.triton_repo import write_entry

    torch.manual_seed(seed)
    notes: list[str] = []
    if checkpoint is not None:
        info = inspect_detection(read_checkpoint(checkpoint))
        if info.arch is not None and info.arch != arch:
            raise ValueError(f"checkpoint is {info.arch}, not {arch}")
        model = build_faster_rcnn(backbone_config(arch), convention=FORMAT_CONVENTION[info.format],
                                  num_classes=info.num_outputs or 81, **overrides)
        report = load_detection_checkpoint(model, checkpoint)
        weights = WeightsInfo(random_init=False, origin=report.info.origin,  # type: ignore[arg-type]
                              format=report.info.format, file=Path(checkpoint).name,
                              sha256=report.info.sha256)
    else:
        model = make_demo_detector(build_faster_rcnn(backbone_config(arch), **overrides), seed=seed)
        weights = WeightsInfo(random_init=True, origin="random-init", format="random-init")
        notes.append("RANDOM-INIT weights: boxes are meaningless (class logits widened so that "
                     "some pass the score threshold)")
    if overrides:
        notes.append(f"test settings differ from the official ones: {overrides}")
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_detection_onnx(model, Path(tmp) / "model.onnx")
        parity = check_detection_parity(model, onnx_path, sizes=parity_sizes)
        if require_parity and not parity.passed:
            raise RuntimeError(f"detection parity failed: {parity.to_dict()}")
        meta = detection_metadata(name=name, arch=arch, model=model, weights=weights,
                                  export=_versions(DETECTION_OPSET, False), max_size=max_size,
                                  notes=notes)
        paths = write_entry(repo, meta, onnx_path, parity=parity.to_dict(), move=True)
    return paths.entry_dir

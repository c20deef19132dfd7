"""ONNX export of HRNetV2p Faster R-CNN with all post-processing inside the graph, and its parity
check. The detection exporter (``model_export.exporters.detection``) drives it.

Graph I/O (one image per call; Triton ``max_batch_size: 1``, so Triton shapes carry a batch of 1):

* ``image``      FP32 ``[1, 3, H, W]``: RGB pixels 0..255 of the resized image, padded bottom/right
  to multiples of 32 (the official padding is the *mean pixel*, i.e. 0 after normalisation; any
  value works for clipping, the padding only touches features near the border);
* ``image_size`` INT64 ``[1, 2]``: ``(valid_h, valid_w)`` of the resized image before padding;
  boxes are clipped to it (limited to ``[1, H] x [1, W]``);
* ``boxes``  FP32 ``[1, K, 4]``: ``x1, y1, x2, y2`` in network-input pixels (legacy models:
  inclusive corners, ``w = x2 - x1 + 1``);
* ``scores`` FP32 ``[1, K]``, sorted descending; ``labels`` INT64 ``[1, K]`` indexing
  ``metadata.labels`` (0 is the background and never emitted, COCO classes are 1..80);
* Mask R-CNN graphs: ``masks`` FP32 ``[1, K, 28, 28]``, each detection's probability of its own
  class over its box. Why not pasted masks: pasting needs the *original* image size and the
  origin's rule (see ``service.contract.MaskProtocol``), and full-size masks would be K x H x W
  (100 x 800 x 1333 bytes = 107 MB per call even as uint8) against 314 KB here; the gateway pastes
  each mask into its box region only, in a worker thread.

Inside: normalisation, backbone, HRFPN, RPN (per-level top-n, NMS 0.7, top-n), RoIAlign, box head,
class-specific decoding, clipping, score threshold, per-class NMS and the top ``detections_per_img``.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from service.contract import (
    BOXES, IMAGE, IMAGE_SIZE, LABELS, MASKS, MMDET_PIXEL_MEAN, SCORES, rescale_size,
)

from model_export.errors import ParityError
from model_export.nets.detection import HRNetFasterRCNN
from model_export.onnx.photos import photo, resize_rgb

INPUT_NAMES = (IMAGE, IMAGE_SIZE)
OUTPUT_NAMES = (BOXES, SCORES, LABELS)
MIN_DETECTION_OPSET = 16  # RoiAlign coordinate_transformation_mode
TRACE_SIZE = (320, 480)
PARITY_SIZES: tuple[tuple[int, int], ...] = ((320, 480), (480, 320))
#: The real photos (scikit-image) parity runs by default: landscape and square, so the padded
#: sizes differ.
PARITY_IMAGES: tuple[str, ...] = ("coffee", "chelsea", "astronaut", "rocket")


def output_names(model: HRNetFasterRCNN) -> tuple[str, ...]:
    """The graph outputs of ``model``: boxes, scores, labels (and masks for Mask R-CNN)."""
    return OUTPUT_NAMES + ((MASKS,) if model.cfg.with_mask else ())


class DetectionGraph(nn.Module):
    """Batch-shaped wrapper: ``[1, 3, H, W]``, ``[1, 2]`` -> ``([1, K, 4], [1, K], [1, K]`` and
    for Mask R-CNN ``[1, K, 28, 28])``."""

    def __init__(self, model: HRNetFasterRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, image_size: Tensor) -> tuple[Tensor, ...]:
        return tuple(t[None] for t in self.model(image[:1], image_size[:1]))


def export_detection_onnx(model: HRNetFasterRCNN, path: str | Path, *,
                          opset: int = 18,
                          trace_size: tuple[int, int] = TRACE_SIZE) -> Path:
    """Trace ``model`` with the TorchScript exporter (``dynamo=False``) into ``path``.

    Height and width are dynamic; ``trace_size`` bounds the resize of the tracing photo, and
    parity must be checked at other sizes. The tracing input's ``image_size`` is smaller than its
    padded size, so clipping is traced as data, not as a constant.
    """
    if opset < MIN_DETECTION_OPSET:
        raise ValueError(f"detection export needs opset >= {MIN_DETECTION_OPSET} "
                         "(RoiAlign coordinate modes)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = photo_input("coffee", trace_size)
    graph = DetectionGraph(model.eval()).eval()
    outputs = output_names(model)
    # Traced into memory and written once: the graphs hold 100-250 MB of weights (three cascade
    # box heads), and a second write plus a read of the file cost seconds per export.
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, example, buf, dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(outputs),
            dynamic_axes={IMAGE: {0: "batch", 2: "height", 3: "width"},
                          IMAGE_SIZE: {0: "batch"},
                          **{name: {0: "batch", 1: "detections"} for name in outputs}},
            do_constant_folding=True, external_data=False)
    import onnx

    data = buf.getvalue()
    onnx.checker.check_model(data)
    proto = onnx.load_from_string(data)
    proto.producer_name = "hrnet-serve model_export"
    onnx.save(proto, str(path))
    return path


# --------------------------------------------------------------------------------------------
# Test-time input (the same rule as the gateway's service/tasks/detect.py)


def letterbox(rgb: np.ndarray, size_divisor: int = 32, pad_value: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``[H, W, 3]`` pixels -> (``image`` ``[1, 3, H', W']`` FP32 padded bottom/right to
    multiples of ``size_divisor``, ``image_size`` ``[1, 2]`` int64 = ``(H, W)``).

    ``pad_value`` None pads with the mean pixel (the official padding); a number pads with it.
    """
    h, w = rgb.shape[:2]
    ph, pw = -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
    out = np.empty((ph, pw, 3), np.float32)
    out[...] = np.asarray(MMDET_PIXEL_MEAN, np.float32) if pad_value is None else np.float32(pad_value)
    out[:h, :w] = rgb
    return (np.ascontiguousarray(out.transpose(2, 0, 1)[None]),
            np.array([[h, w]], dtype=np.int64))


def photo_input(name: str, max_size: tuple[int, int], pad_value: float | None = None
                ) -> tuple[Tensor, Tensor]:
    """A scikit-image photo resized by the detection rule within ``max_size`` and letterboxed:
    ``(image [1, 3, H', W'], image_size [1, 2])`` tensors."""
    img = photo(name)
    nh, nw, _ = rescale_size(img.shape[0], img.shape[1], max_size)
    image, size = letterbox(resize_rgb(img, (nh, nw)), pad_value=pad_value)
    return torch.from_numpy(image), torch.from_numpy(size)


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
    valid_size: tuple[int, int]
    reference: int
    onnx: int
    matched: int
    max_score_err: float
    max_box_err: float
    torch_ms: float = 0.0
    onnxruntime_ms: float = 0.0
    min_mask_iou: float | None = None  # Mask R-CNN: worst matched pair's 28x28 mask IoU at 0.5
    max_mask_err: float | None = None  # ... and largest |probability difference|

    @property
    def match_rate(self) -> float:
        """Matched / max(reference, onnx); 1.0 when both are empty."""
        return self.matched / max(self.reference, self.onnx, 1) if (self.reference or
                                                                    self.onnx) else 1.0


@dataclass
class DetectionParityReport:
    """Parity of the exported detection graph against PyTorch on real photos."""

    trace_size: tuple[int, int] = TRACE_SIZE
    cases: list[DetectionParityCase] = field(default_factory=list)
    min_match_rate: float = 0.95
    iou: float = 0.99
    score_tol: float = 1e-3
    onnxruntime: str = ""
    traced_input: tuple[int, int] | None = None  # padded (h, w) of the tracing photo
    mask_iou: float = 0.99  # Mask R-CNN: every matched pair's thresholded 28x28 masks

    def case_passed(self, c: DetectionParityCase) -> bool:
        """Detections exist and >= ``min_match_rate`` of them match within the tolerances (and
        so do their masks)."""
        return (c.reference > 0 and c.match_rate >= self.min_match_rate
                and c.max_score_err <= self.score_tol
                and (c.min_mask_iou is None or c.min_mask_iou >= self.mask_iou))

    @property
    def passed(self) -> bool:
        """Every case passed."""
        return bool(self.cases) and all(self.case_passed(c) for c in self.cases)

    @property
    def dynamic_size_checked(self) -> bool:
        """True when some case ran at another padded input size than the traced one."""
        return any(tuple(c.size) != self.traced_input for c in self.cases)

    def headline(self) -> str:
        """One line: matched detections and the worst score / box difference."""
        ref = sum(c.reference for c in self.cases)
        matched = sum(c.matched for c in self.cases)
        serr = max((c.max_score_err for c in self.cases), default=0.0)
        berr = max((c.max_box_err for c in self.cases), default=0.0)
        masks = [c.min_mask_iou for c in self.cases if c.min_mask_iou is not None]
        return (f"{matched}/{ref} detections matched, max|score err| {serr:.1e}, "
                f"max|box err| {berr:.1e} px"
                + (f", min mask IoU {min(masks):.4f}" if masks else ""))

    def summary(self) -> str:
        """One line per photo, for the console."""
        return "\n".join(
            f"  {c.image} {c.size[0]}x{c.size[1]} (valid {c.valid_size[0]}x{c.valid_size[1]}): "
            f"{c.matched}/{c.reference} matched ({c.onnx} from ONNX), max|score err| "
            f"{c.max_score_err:.1e}"
            + (f", min mask IoU {c.min_mask_iou:.4f}" if c.min_mask_iou is not None else "")
            + f" -> {'ok' if self.case_passed(c) else 'FAIL'}"
            for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the entry's ``parity.json``)."""
        return {"task": "detection", "passed": self.passed, "iou": self.iou,
                "mask_iou": self.mask_iou,
                "score_tol": self.score_tol, "min_match_rate": self.min_match_rate,
                "trace_size": list(self.trace_size), "onnxruntime": self.onnxruntime,
                "traced_input": list(self.traced_input) if self.traced_input else None,
                "dynamic_size_checked": self.dynamic_size_checked,
                "reference": "PyTorch float32 on CPU, same pixel input",
                "cases": [{**c.__dict__, "size": list(c.size), "valid_size": list(c.valid_size),
                           "match_rate": c.match_rate, "passed": self.case_passed(c)}
                          for c in self.cases]}


def require_detection_parity(report: DetectionParityReport) -> None:
    """Raise :class:`~model_export.errors.ParityError` unless every case passed."""
    if report.passed:
        return
    raise ParityError(
        "ONNX Runtime detections differ from PyTorch (need >= "
        f"{report.min_match_rate:.0%} matched at IoU >= {report.iou}, |score err| <= "
        f"{report.score_tol}, and some detections per photo):\n{report.summary()}")


def match_pairs(ref: Sequence[np.ndarray], got: Sequence[np.ndarray], iou: float = 0.99
                ) -> list[tuple[int, int]]:
    """Greedy one-to-one matching (same label, IoU >= ``iou``) in reference score order:
    ``(reference index, other index)`` pairs. Only the first three arrays (boxes, scores,
    labels) are read."""
    rb, rs, rl = ref[:3]
    gb, gs, gl = got[:3]
    if len(rb) == 0 or len(gb) == 0:
        return []
    ious = box_iou(rb, gb)
    ious[rl[:, None] != gl[None, :]] = 0
    used = np.zeros(len(gb), bool)
    pairs = []
    for i in np.argsort(-rs, kind="stable"):
        cand = np.where(~used & (ious[i] >= iou))[0]
        if len(cand) == 0:
            continue
        j = cand[np.argmin(np.abs(gs[cand] - rs[i]))]
        used[j] = True
        pairs.append((int(i), int(j)))
    return pairs


def mask_agreement(ref: np.ndarray, got: np.ndarray, pairs: list[tuple[int, int]],
                   threshold: float = 0.5) -> tuple[float, float]:
    """(min IoU of the thresholded masks, max |probability diff|) over matched ``pairs`` of
    ``[K, R, R]`` mask probabilities (1.0, 0.0 with no pair)."""
    worst, err = 1.0, 0.0
    for i, j in pairs:
        a, b = ref[i] > threshold, got[j] > threshold
        union = np.logical_or(a, b).sum()
        worst = min(worst, float(np.logical_and(a, b).sum() / union) if union else 1.0)
        err = max(err, float(np.abs(ref[i] - got[j]).max()))
    return worst, err


def match_detections(ref: Sequence[np.ndarray], got: Sequence[np.ndarray], iou: float = 0.99
                     ) -> tuple[int, float, float]:
    """Greedy one-to-one matching (same label, IoU >= ``iou``) in reference score order.

    Returns (matched count, max |score diff|, max |box coordinate diff|) over matched pairs.
    """
    pairs = match_pairs(ref, got, iou)
    serr = max((float(abs(got[1][j] - ref[1][i])) for i, j in pairs), default=0.0)
    berr = max((float(np.abs(got[0][j] - ref[0][i]).max()) for i, j in pairs), default=0.0)
    return len(pairs), serr, berr


def check_detection_parity(model: HRNetFasterRCNN, onnx_path: str | Path, *,
                           sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
                           images: Sequence[str] = PARITY_IMAGES,
                           trace_size: tuple[int, int] = TRACE_SIZE,
                           session: Any = None) -> DetectionParityReport:
    """Run PyTorch and ONNX Runtime on real photos (resized within each max size, letterboxed).

    Photo ``k`` is resized within ``sizes[k % len(sizes)]``; the photos' different aspect ratios
    give different padded sizes and valid sizes, so the dynamic axes are exercised.
    """
    import onnxruntime as ort

    if session is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    traced = photo_input("coffee", trace_size)[0].shape[2:]  # what export_detection_onnx traced
    report = DetectionParityReport(trace_size=tuple(trace_size),  # type: ignore[arg-type]
                                   onnxruntime=ort.__version__,
                                   traced_input=(int(traced[0]), int(traced[1])))
    for k, name in enumerate(images):
        size = sizes[k % len(sizes)]
        x, hw = photo_input(name, size)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = tuple(t.numpy() for t in model(x, hw))
        t1 = time.perf_counter()
        got = tuple(o[0] for o in session.run(
            list(output_names(model)), {IMAGE: x.numpy(), IMAGE_SIZE: hw.numpy()}))
        t2 = time.perf_counter()
        matched, serr, berr = match_detections(ref, got, report.iou)
        mask_iou = mask_err = None
        if model.cfg.with_mask:
            mask_iou, mask_err = mask_agreement(ref[3], got[3], match_pairs(ref, got, report.iou),
                                                model.cfg.mask_thr_binary)
        report.cases.append(DetectionParityCase(
            name, (int(x.shape[2]), int(x.shape[3])), (int(hw[0, 0]), int(hw[0, 1])),
            len(ref[0]), len(got[0]), matched, serr, berr,
            round((t1 - t0) * 1e3, 1), round((t2 - t1) * 1e3, 1), mask_iou, mask_err))
    return report

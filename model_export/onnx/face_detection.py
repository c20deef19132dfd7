"""ONNX export of a converted BlazeFace model, and its parity check against the original runtime.

Graph I/O (dynamic batch): ``image`` FP32 ``[N, 3, S, S]`` RGB pixels 0..255 (the graph computes
MediaPipe's ``x / 127.5 - 1``) -> ``regressors`` FP32 ``[N, A, 16]`` and ``classificators`` FP32
``[N, A, 1]``, the model's raw SSD tensors.

Parity: the *original* model file runs in the TFLite interpreter (``ai-edge-litert``, Google's
LiteRT runtime) and the exported graph in ONNX Runtime, on the same input tensors: real photos
letterboxed into the input square as the gateway does (OpenCV area resize, zero border), one
batch through ONNX Runtime, one at a time through LiteRT. Compared: the raw tensors, and the
detections MediaPipe's post-processing makes of them (:func:`mediapipe_detections`, a plain
transcription of ``TensorsToDetectionsCalculator`` + ``NonMaxSuppressionCalculator``): the same
faces, boxes and keypoints within ``1e-3`` of the box size, scores within ``1e-4``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from service.contract import CLASSIFICATORS, IMAGE, REGRESSORS, FaceDetectionProtocol

from model_export.errors import ParityError
from model_export.mediapipe import NORMALIZATION
from model_export.nets.tflite import TFLiteNet
from model_export.onnx.hrnet import PixelInput

OUTPUT_NAMES = (REGRESSORS, CLASSIFICATORS)
#: Real photos of the export's parity check (scikit-image): two with faces, two without, and
#: crops of the astronaut (a face filling most of the input, one cut at the border).
PARITY_PHOTOS: tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea")
BOX_REL_TOL = 1e-3
SCORE_TOL = 1e-4


class BlazeFaceGraph(nn.Module):
    """Pixels in, ``(regressors, classificators)`` out, whatever the file's output order."""

    def __init__(self, net: TFLiteNet) -> None:
        super().__init__()
        shapes = [net.graph.tensors[i].shape for i in net.graph.outputs]
        if len(shapes) != 2 or sorted(s[-1] for s in shapes) != [1, 16]:
            raise ParityError(f"not a BlazeFace model: outputs {shapes} (expected [1, A, 16] "
                              "regressors and [1, A, 1] scores)")
        self.order = (0, 1) if shapes[0][-1] == 16 else (1, 0)
        self.pixels = PixelInput(net, NORMALIZATION.mean, NORMALIZATION.std,
                                 NORMALIZATION.pixel_scale)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        out = self.pixels(image)
        return out[self.order[0]], out[self.order[1]]


def export_face_detection_onnx(net: TFLiteNet, path: str | Path, *, opset: int = 18) -> Path:
    """Trace ``net`` (with in-graph normalisation) into ``path``; the batch is dynamic."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = net.input_shape
    graph = BlazeFaceGraph(net).eval()
    example = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255.0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[IMAGE], output_names=list(OUTPUT_NAMES),
            dynamic_axes={IMAGE: {0: "batch"}, REGRESSORS: {0: "batch"},
                          CLASSIFICATORS: {0: "batch"}},
            do_constant_folding=True, external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    model.producer_name = "hrnet-serve model_export (TFLite BlazeFace)"
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------------------------
# Inputs and MediaPipe's post-processing (the reference)
# --------------------------------------------------------------------------------------------


def letterbox_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` resized to fit ``size x size`` keeping its aspect (OpenCV area resize), centred on
    black: ``[size, size, 3]`` float32 pixels."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)
    out = np.zeros((size, size, 3), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def rgb(image: np.ndarray) -> np.ndarray:
    """An H x W (grey) or H x W x 3/4 uint8 array as H x W x 3 RGB."""
    a = np.asarray(image)
    return np.ascontiguousarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])


def parity_inputs(size: int, photos: Sequence[tuple[str, np.ndarray]] | None = None
                  ) -> list[tuple[str, np.ndarray]]:
    """``(name, [size, size, 3] float32 pixels)`` of the parity photos (and crops)."""
    if photos is None:
        from skimage import data

        named = [(n, rgb(getattr(data, n)())) for n in PARITY_PHOTOS]
        ast = rgb(data.astronaut())
        named += [("astronaut_face_crop", ast[40:260, 120:340]),
                  ("astronaut_cut_face", ast[110:430, 0:230])]
    else:
        named = list(photos)
    return [(n, letterbox_square(img, size)) for n, img in named]


def _anchor_centres(proto: FaceDetectionProtocol) -> np.ndarray:
    """``SsdAnchorsCalculator`` with fixed anchor size, as a loop over its layers."""
    a = proto.anchors
    h, w = proto.input_size
    out: list[tuple[float, float]] = []
    layer = 0
    while layer < len(a.strides):
        last = layer
        per_cell = 0
        while last < len(a.strides) and a.strides[last] == a.strides[layer]:
            per_cell += len(a.aspect_ratios) + (1 if a.interpolated_scale_aspect_ratio > 0 else 0)
            last += 1
        fh, fw = math.ceil(h / a.strides[layer]), math.ceil(w / a.strides[layer])
        for y in range(fh):
            for x in range(fw):
                out += [((x + a.offset[0]) / fw, (y + a.offset[1]) / fh)] * per_cell
        layer = last
    return np.asarray(out, np.float64)


def mediapipe_detections(regressors: np.ndarray, logits: np.ndarray,
                         proto: FaceDetectionProtocol) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's detections of one pass: ``[(values, score)]`` best first, where ``values`` is
    ``[xmin, ymin, xmax, ymax, kx0, ky0, ...]`` relative to the input square."""
    anchors = _anchor_centres(proto)
    xs, ys, ws, hs = proto.box_scale
    k = len(proto.keypoints)
    dets: list[tuple[np.ndarray, float]] = []
    for i in range(len(anchors)):
        logit = min(max(float(logits[i, 0]), -proto.score_clipping), proto.score_clipping)
        score = 1.0 / (1.0 + math.exp(-logit))
        if score < proto.score_threshold:
            continue
        r = regressors[i].astype(np.float64)
        ax, ay = anchors[i]
        cx, cy = r[0] / xs + ax, r[1] / ys + ay
        bw, bh = r[2] / ws, r[3] / hs
        if bw <= 0 or bh <= 0:
            continue
        vals = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
        for j in range(k):
            vals += [r[4 + 2 * j] / xs + ax, r[5 + 2 * j] / ys + ay]
        dets.append((np.asarray(vals), score))
    dets.sort(key=lambda d: -d[1])
    kept: list[tuple[np.ndarray, float]] = []
    remaining = dets
    while remaining:
        best = remaining[0]
        overlap = [d for d in remaining if _iou(d[0], best[0]) > proto.nms_iou]
        remaining = [d for d in remaining if _iou(d[0], best[0]) <= proto.nms_iou]
        if proto.nms == "weighted":
            total = sum(s for _, s in overlap)
            kept.append((sum(v * s for v, s in overlap) / total, best[1]))
        else:
            kept.append(best)
        if not overlap:  # a degenerate box that does not overlap itself
            remaining = remaining[1:]
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Parity report
# --------------------------------------------------------------------------------------------


@dataclass
class FaceParityCase:
    """One photo: raw tensor errors and detection agreement (ONNX Runtime vs LiteRT)."""

    photo: str
    faces: int
    max_abs_err_regressors: float
    max_abs_err_logits: float
    max_abs_ref: float
    max_box_rel_err: float  # box and keypoint coordinates, relative to the box's larger side
    max_score_err: float
    torch_max_abs_err: float  # the converter itself: PyTorch vs LiteRT
    passed: bool


@dataclass
class FaceParityReport:
    """ONNX Runtime vs the original TFLite model in LiteRT (``parity.json``)."""

    task: str
    reference: str
    input_size: tuple[int, int]
    batch: int
    box_rel_tol: float = BOX_REL_TOL
    score_tol: float = SCORE_TOL
    cases: list[FaceParityCase] = field(default_factory=list)
    onnxruntime: str = ""
    litert: str = ""
    onnxruntime_ms: float = 0.0
    litert_ms: float = 0.0

    @property
    def passed(self) -> bool:
        """Some photo ran, some face was compared, and every photo passed."""
        return (bool(self.cases) and all(c.passed for c in self.cases)
                and any(c.faces for c in self.cases))

    def headline(self) -> str:
        """One line: faces compared and the worst box error."""
        worst = max((c.max_box_rel_err for c in self.cases), default=float("nan"))
        return (f"{sum(c.faces for c in self.cases)} faces on {len(self.cases)} photos, "
                f"box err <= {worst:.1e} of the box size")

    def summary(self) -> str:
        """One line per photo."""
        return "\n".join(
            f"  {c.photo}: {c.faces} faces, regressors max|err| {c.max_abs_err_regressors:.2e}, "
            f"logits {c.max_abs_err_logits:.2e}, boxes {c.max_box_rel_err:.1e} rel, scores "
            f"{c.max_score_err:.1e} -> {'ok' if c.passed else 'FAIL'}" for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _litert(model_path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ParityError("the parity check runs the original model in LiteRT: install "
                          "ai-edge-litert (the 'export' extra)") from exc
    interp = Interpreter(model_path=str(model_path), num_threads=1)
    interp.allocate_tensors()
    return interp


def _compare(ref: list[tuple[np.ndarray, float]], got: list[tuple[np.ndarray, float]]
             ) -> tuple[float, float, bool]:
    """(max coordinate error / box size, max score error, same faces)."""
    if len(ref) != len(got):
        return math.inf, math.inf, False
    box_err = score_err = 0.0
    for (rv, rs), (gv, gs) in zip(ref, got):
        side = max(rv[2] - rv[0], rv[3] - rv[1])
        box_err = max(box_err, float(np.abs(rv - gv).max() / side))
        score_err = max(score_err, abs(rs - gs))
    return box_err, score_err, True


def check_face_parity(net: TFLiteNet, onnx_path: str | Path, model_path: str | Path,
                      proto: FaceDetectionProtocol,
                      photos: Sequence[tuple[str, np.ndarray]] | None = None) -> FaceParityReport:
    """Run the parity photos through LiteRT (the original file) and ONNX Runtime (the export),
    and PyTorch (the converter); compare tensors and MediaPipe detections."""
    import onnxruntime as ort

    from model_export.onnx.hrnet import onnx_session

    size = proto.input_size[0]
    inputs = parity_inputs(size, photos)
    batch = np.stack([x.transpose(2, 0, 1) for _, x in inputs]).astype(np.float32)
    session = onnx_session(onnx_path)
    t0 = time.perf_counter()
    got_reg, got_log = session.run(list(OUTPUT_NAMES), {IMAGE: batch})
    t1 = time.perf_counter()
    interp = _litert(Path(model_path))
    inp = interp.get_input_details()[0]["index"]
    outs = {d["shape"][-1]: d["index"] for d in interp.get_output_details()}
    ref_reg, ref_log = [], []
    t2 = time.perf_counter()
    for _, x in inputs:
        interp.set_tensor(inp, (x / np.float32(127.5) - np.float32(1.0))[None])
        interp.invoke()
        ref_reg.append(interp.get_tensor(outs[16])[0].copy())
        ref_log.append(interp.get_tensor(outs[1])[0].copy())
    t3 = time.perf_counter()
    wrapper = BlazeFaceGraph(net).eval()
    with torch.no_grad():
        t_reg, t_log = (t.numpy() for t in wrapper(torch.from_numpy(batch)))
    try:
        from importlib.metadata import version

        litert_version = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        litert_version = "?"
    report = FaceParityReport(
        task="face_detection",
        reference="the original .tflite in LiteRT (ai-edge-litert), MediaPipe's decoding and "
        "weighted NMS on both outputs", input_size=(size, size), batch=len(inputs),
        onnxruntime=ort.__version__, litert=litert_version,
        onnxruntime_ms=round((t1 - t0) * 1e3, 2), litert_ms=round((t3 - t2) * 1e3, 2))
    for i, (name, _) in enumerate(inputs):
        ref = mediapipe_detections(ref_reg[i], ref_log[i], proto)
        got = mediapipe_detections(got_reg[i], got_log[i], proto)
        box_err, score_err, same = _compare(ref, got)
        err_reg = float(np.abs(got_reg[i] - ref_reg[i]).max())
        err_log = float(np.abs(got_log[i] - ref_log[i]).max())
        torch_err = float(max(np.abs(t_reg[i] - ref_reg[i]).max(),
                              np.abs(t_log[i] - ref_log[i]).max()))
        max_ref = float(max(np.abs(ref_reg[i]).max(), np.abs(ref_log[i]).max()))
        ok = (same and box_err <= BOX_REL_TOL and score_err <= SCORE_TOL
              and max(err_reg, err_log) <= 1e-3 + 1e-4 * max_ref)
        report.cases.append(FaceParityCase(
            photo=name, faces=len(ref), max_abs_err_regressors=err_reg, max_abs_err_logits=err_log,
            max_abs_ref=max_ref, max_box_rel_err=box_err, max_score_err=score_err,
            torch_max_abs_err=torch_err, passed=bool(ok)))
    return report


def require_face_parity(report: FaceParityReport) -> None:
    """ParityError unless every photo matched (and some face was compared)."""
    if report.passed:
        return
    raise ParityError(
        "the exported face detector differs from the original TFLite model beyond the limits "
        f"(boxes {report.box_rel_tol:g} of the box size, scores {report.score_tol:g}), or no "
        f"face was found to compare:\n{report.summary()}")

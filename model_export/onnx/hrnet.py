"""ONNX export of an HRNet network with in-graph normalisation, and the ONNX Runtime parity check.

The exported graph takes ``image``: FP32 NCHW RGB pixels (0..255) and computes
``(x / 255 - mean) / std`` itself (see docs/architecture.md). Segmentation graphs have dynamic
batch, height and width; landmark graphs have a dynamic batch and a fixed 256x256 input.

We use the TorchScript-based exporter (``dynamo=False``): it records the network's
``F.interpolate(size=other.shape[-2:])`` calls as Shape -> Resize chains, so every bilinear resize
follows the runtime size. The parity check always runs at sizes other than the trace size, so a
size baked in at trace time would fail it.
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

from service.contract import HEATMAPS, IMAGE, IMAGENET_MEAN, IMAGENET_STD, LOGITS

from model_export.datasets import LANDMARK_INPUT_SIZE
from model_export.errors import ParityError
from model_export.onnx.photos import parity_images, pixel_batch

OUTPUT_NAMES = {"segmentation": LOGITS, "landmarks": HEATMAPS}
DEFAULT_OPSET = 18
# The TorchScript exporter's ceiling in this torch version.
MAX_OPSET = 20
DEFAULT_TRACE_SIZE: tuple[int, int] = (192, 320)
DEFAULT_SEG_PARITY_SIZES: tuple[tuple[int, int], ...] = ((256, 512), (250, 375))
DEFAULT_PARITY_BATCHES: tuple[int, ...] = (1, 2)


class PixelInput(nn.Module):
    """Runs ``net`` on pixel input: ``net((x / 255 - mean) / std)`` (the official normalisation)."""

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pixel_scale: float = 255.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.net((image / self.pixel_scale - self.mean) / self.std)


def export_onnx(
    net: nn.Module,
    path: str | Path,
    *,
    task: str,
    opset: int = DEFAULT_OPSET,
    trace_size: tuple[int, int] | None = None,
) -> Path:
    """Export ``net`` (taking normalised input) wrapped in :class:`PixelInput` to ``path``.

    ``trace_size`` is the (h, w) of the example input; parity must then be checked at other sizes.
    """
    if task not in OUTPUT_NAMES:
        raise ValueError(f"ONNX export does not handle task {task!r}")
    if not 13 <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} not supported (13..{MAX_OPSET})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = PixelInput(net).eval()
    if task == "landmarks":
        trace_size = LANDMARK_INPUT_SIZE
    elif trace_size is None:
        trace_size = DEFAULT_TRACE_SIZE
    h, w = trace_size
    # HRNet has no batch-dependent reshapes, so a batch of 1 traces a batch-agnostic graph; the
    # parity check runs batches > 1 to prove it.
    example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255.0
    out_name = OUTPUT_NAMES[task]
    dynamic_axes: dict[str, dict[int, str]] = {IMAGE: {0: "batch"}, out_name: {0: "batch"}}
    if task == "segmentation":
        dynamic_axes[IMAGE].update({2: "height", 3: "width"})
        dynamic_axes[out_name].update({2: "out_height", 3: "out_width"})
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but is the robust path for dynamic H/W.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            input_names=[IMAGE],
            output_names=[out_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            external_data=False,
        )
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    model.producer_name = "hrnet-serve model_export"
    onnx.save(model, str(path))
    return path



# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityThresholds:
    """Pass criteria. Logit error passes when ``max_abs_err <= abs_tol + rel_tol * max|ref|``."""

    abs_tol: float = 1e-3
    rel_tol: float = 1e-4
    min_label_agreement: float = 0.999
    max_landmark_displacement: float = 1.0


@dataclass
class ParityCase:
    """One (size, batch) comparison."""

    size: tuple[int, int]
    batch: int
    images: list[str]
    max_abs_err: float
    mean_abs_err: float
    max_abs_ref: float
    passed: bool
    label_agreement: float | None = None
    max_landmark_displacement: float | None = None
    tied_peaks: int | None = None
    torch_ms: float = 0.0
    onnxruntime_ms: float = 0.0


@dataclass
class ParityReport:
    """ONNX Runtime vs PyTorch on real photographs (``parity.json``)."""

    task: str
    output: str
    trace_size: tuple[int, int]
    thresholds: ParityThresholds
    cases: list[ParityCase] = field(default_factory=list)
    onnxruntime: str = ""
    providers: list[str] = field(default_factory=list)
    reference: str = "PyTorch float32 on CPU, input normalised in numpy as the official code does"

    @property
    def passed(self) -> bool:
        """Some case ran, and every case passed."""
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def dynamic_size_checked(self) -> bool:
        """True when some case ran at a size other than the trace size."""
        return any(tuple(c.size) != tuple(self.trace_size) for c in self.cases)

    def headline(self) -> str:
        """One line: the worst error over all cases."""
        worst = max((c.max_abs_err for c in self.cases), default=float("nan"))
        return f"max|err| {worst:.2e}"

    def summary(self) -> str:
        """One line per case, for the console."""
        lines = []
        for c in self.cases:
            extra = (
                f"labels agree {c.label_agreement:.5f}"
                if c.label_agreement is not None
                else f"max landmark shift {c.max_landmark_displacement:.2f} px"
            )
            lines.append(
                f"  {c.size[0]}x{c.size[1]} batch {c.batch}: max|err| {c.max_abs_err:.2e} "
                f"(max|ref| {c.max_abs_ref:.2f}), {extra} -> {'ok' if c.passed else 'FAIL'}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the entry's ``parity.json``)."""
        d = asdict(self)
        d["passed"] = self.passed
        d["dynamic_size_checked"] = self.dynamic_size_checked
        return d


def normalise(pixels: np.ndarray) -> np.ndarray:
    """The official input transform, in numpy: ``(x / 255 - mean) / std``."""
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return ((pixels / np.float32(255.0) - mean) / std).astype(np.float32)


def heatmap_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """Integer argmax (x, y) of each heatmap: ``[N, K, 2]``."""
    n, k, h, w = heatmaps.shape
    idx = heatmaps.reshape(n, k, h * w).argmax(-1)
    return np.stack([idx % w, idx // w], axis=-1).astype(np.float64)


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(
    net: nn.Module,
    onnx_path: str | Path,
    *,
    task: str,
    sizes: Sequence[tuple[int, int]] | None = None,
    batches: Sequence[int] = DEFAULT_PARITY_BATCHES,
    trace_size: tuple[int, int] | None = None,
    thresholds: ParityThresholds | None = None,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch on real photos at every (size, batch).

    For landmarks the size is fixed (256x256); different photos per case stand in for sizes.
    Returns the report; callers decide whether a failure is fatal (see :func:`require_parity`).
    """
    import onnxruntime as ort

    thresholds = thresholds or ParityThresholds()
    out_name = OUTPUT_NAMES[task]
    if task == "landmarks":
        sizes = [LANDMARK_INPUT_SIZE]
        trace_size = LANDMARK_INPUT_SIZE
    else:
        sizes = list(sizes or DEFAULT_SEG_PARITY_SIZES)
        trace_size = trace_size or DEFAULT_TRACE_SIZE
        if all(tuple(s) == tuple(trace_size) for s in sizes):
            raise ValueError("parity sizes must include a size other than the trace size")
    session = onnx_session(onnx_path)
    report = ParityReport(
        task=task,
        output=out_name,
        trace_size=tuple(trace_size),  # type: ignore[arg-type]
        thresholds=thresholds,
        onnxruntime=ort.__version__,
        providers=list(session.get_providers()),
    )
    photos = parity_images()
    net = net.eval()
    case_no = 0
    for size in sizes:
        for batch in batches:
            pixels, names = pixel_batch(photos, tuple(size), int(batch), offset=case_no)
            case_no += 1
            t0 = time.perf_counter()
            with torch.no_grad():
                ref = net(torch.from_numpy(normalise(pixels))).numpy()
            t1 = time.perf_counter()
            got = session.run([out_name], {IMAGE: pixels})[0]
            t2 = time.perf_counter()
            report.cases.append(_compare(ref, got, task, size, batch, names, thresholds, t1 - t0, t2 - t1))
    return report


def _compare(
    ref: np.ndarray,
    got: np.ndarray,
    task: str,
    size: tuple[int, int],
    batch: int,
    names: list[str],
    th: ParityThresholds,
    torch_s: float,
    ort_s: float,
) -> ParityCase:
    if ref.shape != got.shape:
        raise ParityError(f"output shape differs at {size} batch {batch}: torch {ref.shape}, onnx {got.shape}")
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    max_err = float(diff.max())
    max_ref = float(np.abs(ref).max())
    ok = math.isfinite(max_err) and max_err <= th.abs_tol + th.rel_tol * max_ref
    case = ParityCase(
        size=(int(size[0]), int(size[1])),
        batch=int(batch),
        images=names,
        max_abs_err=max_err,
        mean_abs_err=float(diff.mean()),
        max_abs_ref=max_ref,
        passed=False,
        torch_ms=round(torch_s * 1e3, 2),
        onnxruntime_ms=round(ort_s * 1e3, 2),
    )
    if task == "segmentation":
        case.label_agreement = float((ref.argmax(1) == got.argmax(1)).mean())
        ok = ok and case.label_agreement >= th.min_label_agreement
    else:
        p_ref, p_got = heatmap_peaks(ref), heatmap_peaks(got)
        shift = np.linalg.norm(p_ref - p_got, axis=-1)
        # A peak that moved to a location torch scores within the numeric error of its own
        # maximum is a tie, not a disagreement (random-init heatmaps have near-ties).
        n, k = np.indices(shift.shape)
        at_got = ref[n, k, p_got[..., 1].astype(int), p_got[..., 0].astype(int)]
        tied = (ref.reshape(*shift.shape, -1).max(-1) - at_got) <= 2 * max_err
        case.tied_peaks = int((tied & (shift > 0)).sum())
        case.max_landmark_displacement = float(shift[~tied].max()) if (~tied).any() else 0.0
        ok = ok and case.max_landmark_displacement <= th.max_landmark_displacement
    case.passed = bool(ok)
    return case


def require_parity(report: ParityReport) -> None:
    """Raise :class:`ParityError` with a readable message unless every case passed."""
    if report.passed:
        return
    th = report.thresholds
    raise ParityError(
        "ONNX Runtime output differs from PyTorch beyond the thresholds "
        f"(abs_tol {th.abs_tol}, rel_tol {th.rel_tol}, label agreement >= {th.min_label_agreement}, "
        f"landmark shift <= {th.max_landmark_displacement} px):\n{report.summary()}"
    )

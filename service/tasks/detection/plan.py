"""Detection planning: the official test resize (and optional scale / flip TTA) of one image.

The official test (mmdetection ``ImageTransform``): ``mmcv.imrescale`` with scale
``min(1333 / long, 800 / short)`` and size ``int(w * s + 0.5) x int(h * s + 0.5)`` (OpenCV bilinear
on the uint8 image: :func:`service.imaging.resize.resize_image`), then the normalised image is
padded bottom/right with 0 to a multiple of 32, i.e. the *mean pixel* here because the graph
normalises.
Each pass sends ``image`` and ``image_size`` = (resized h, w) before padding (models exported
before that input existed get ``image`` alone).

Optional test-time augmentation: extra scales (multiplying ``max_size``) and a horizontal flip.
:func:`resolve` first fills the request's omitted options with the model's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from service.contract import (
    IMAGE, IMAGE_SIZE, MASKS, DetectionMetadata, MaskProtocol, padded, rescale_size,
)
from service.errors import Unprocessable, shown
from service.imaging.resize import resize_image
from service.tasks.common import Limits
from service.tasks.detection.schemas import DetectOptions


@dataclass(frozen=True)
class DetectionRequest:
    """A request's options with the model's defaults applied."""

    options: DetectOptions
    score_threshold: float
    max_detections: int
    classes: frozenset[int] | None  # label indices to keep (None: all)
    max_size: tuple[int, int]
    masks: bool = False  # instance masks asked for (and the model has them)


def resolve(options: DetectOptions, extras: dict[str, Any], meta: DetectionMetadata,
            limits: Limits) -> DetectionRequest:
    """Options + the model's defaults; 422 ``invalid_options`` for unknown classes and for
    ``max_detections`` above the graph's cap (``detection.max_detections``: no pass returns more)."""
    proto = meta.detection
    thr = proto.score_threshold if options.score_threshold is None else options.score_threshold
    if options.max_detections is not None and options.max_detections > proto.max_detections:
        raise Unprocessable(
            f"invalid options: max_detections: {options.max_detections} is more than model "
            f"'{meta.name}' returns (its graph keeps at most {proto.max_detections} boxes; see "
            "limits.max_detections in /v1/models)", code="invalid_options")
    limit = options.max_detections or proto.max_detections
    max_size = tuple(options.max_size or proto.max_size)
    masks = options.masks or options.polygons
    if masks and (proto.masks is None or not any(o.name == MASKS for o in meta.outputs)):
        raise Unprocessable(
            f"invalid options: masks: model '{meta.name}' ({proto.head}) has no masks output; "
            "see outputs in /v1/models (Mask R-CNN models have one)", code="invalid_options")
    return DetectionRequest(options, thr, limit, class_filter(meta, options.classes), max_size,  # type: ignore[arg-type]
                            masks=masks)


def class_filter(meta: DetectionMetadata, classes: list[str | int] | None) -> frozenset[int] | None:
    """Label indices selected by names or indices; 422 for unknown ones."""
    if classes is None:
        return None
    names = {n: i for i, n in enumerate(meta.labels)}
    out = set()
    for c in classes:
        # isdecimal, not isdigit: int() refuses digits such as '²' that isdigit accepts.
        # (Ten digits at most: int() refuses strings past 4300 digits, and no index is that long.)
        if isinstance(c, int) or (isinstance(c, str) and c.isdecimal() and len(c) <= 10):
            i = int(c)
            if not 1 <= i < len(meta.labels):
                raise Unprocessable(f"class index {i} out of range 1..{len(meta.labels) - 1}",
                                    code="invalid_options")
            out.add(i)
        elif c in names and names[c] != 0:
            out.add(names[c])
        else:
            raise Unprocessable(f"unknown class {shown(c)} for model '{meta.name}'",
                                code="invalid_options")
    return frozenset(out)


@dataclass(frozen=True)
class DetPass:
    """One network pass: its resized size and how to map its boxes back to the image."""

    resized: tuple[int, int]  # (h, w) before padding
    padded: tuple[int, int]  # (h, w) of the network input
    scale_xy: tuple[float, float]  # network-input pixels per image pixel
    flipped: bool


def letterbox(rgb: np.ndarray, divisor: int, mean_pixel: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> ``[3, H', W']`` FP32 padded bottom/right with the mean pixel."""
    h, w = rgb.shape[:2]
    out = np.empty((3, padded(h, divisor), padded(w, divisor)), np.float32)
    out[:] = mean_pixel.reshape(3, 1, 1)
    out[:, :h, :w] = rgb.transpose(2, 0, 1)
    return out


@dataclass(frozen=True)
class DetectionPlan:
    """The passes of a request (scales x flips) and what the merge needs to know."""

    image_size: tuple[int, int]  # (h, w) of the original image
    passes_geometry: list[DetPass]
    size_divisor: int
    mean_pixel: tuple[float, float, float]
    with_size_input: bool  # the graph takes image_size (models exported before it did not)
    legacy: bool  # mmdet v0.6 inclusive-pixel boxes
    nms_iou: float
    merge_rule: str  # "nms" or "wbf" for TTA passes
    score_threshold: float  # kept: score > threshold
    classes: frozenset[int] | None  # kept label indices (None: all)
    max_detections: int
    mask: MaskProtocol | None = None  # paste rule when masks are asked for

    reduce_hint: ClassVar[str] = "use fewer or smaller scales, no flip, or a smaller max_size"

    @property
    def n_passes(self) -> int:
        return len(self.passes_geometry)

    @property
    def n_pixels(self) -> int:
        return sum(p.padded[0] * p.padded[1] for p in self.passes_geometry)

    def passes(self, image: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Letterboxed inputs (and ``image_size``) of every pass, in plan order."""
        mean = np.asarray(self.mean_pixel, np.float32)
        out: list[dict[str, np.ndarray]] = []
        resized: dict[tuple[int, int], np.ndarray] = {}
        for p in self.passes_geometry:
            if p.resized not in resized:
                resized[p.resized] = resize_image(image, p.resized)
            src = resized[p.resized][:, ::-1] if p.flipped else resized[p.resized]
            inputs = {IMAGE: letterbox(src, self.size_divisor, mean)}
            if self.with_size_input:
                inputs[IMAGE_SIZE] = np.asarray(p.resized, np.int64)
            out.append(inputs)
        return out


def plan(req: DetectionRequest, meta: DetectionMetadata, image_size: tuple[int, int]) -> DetectionPlan:
    """The passes for an image of ``image_size = (h, w)``: one per scale (and flip)."""
    proto = meta.detection
    opts = req.options
    h, w = image_size
    legacy = proto.box_convention == "legacy_plus_one"
    geometry = []
    for s in opts.scales:
        limits = (int(round(req.max_size[0] * s)), int(round(req.max_size[1] * s)))
        nh, nw, scale = rescale_size(h, w, limits)
        # mmdet v0.6 divides by the one float scale; 2.x+ by per-axis factors new/old.
        sxy = (scale, scale) if legacy else (nw / w, nh / h)
        size = (padded(nh, proto.size_divisor), padded(nw, proto.size_divisor))
        for flipped in ([False, True] if opts.flip else [False]):
            geometry.append(DetPass((nh, nw), size, sxy, flipped))
    return DetectionPlan(
        image_size=(h, w), passes_geometry=geometry, size_divisor=proto.size_divisor,
        mean_pixel=meta.normalization.mean_pixel, with_size_input=meta.takes(IMAGE_SIZE),
        legacy=legacy, nms_iou=proto.nms_iou, merge_rule=opts.merge,
        score_threshold=req.score_threshold, classes=req.classes,
        max_detections=req.max_detections, mask=proto.masks if req.masks else None)

"""Segmentation planning: which network passes the official test procedure runs for an image.

Plan (per scale ``s``; reference README, "Segmentation test procedure"):

* LIP (``resize_to_square``): the uint8 image is first resized straight to a square (aspect not
  kept) with OpenCV's 8-bit fixed-point arithmetic, reproduced bit-exactly; that square is the
  "source" image.
* long side ``int(base_size * s + 0.5)``, short side ``int(short * long_new / long + 0.5)``;
  OpenCV bilinear on the float image.
* ``cityscapes`` variant: ``s <= 1`` runs the whole resized image; ``s > 1`` slides windows of the
  crop size with stride = crop, shifting the last window back inside, never padding.
* ``base`` variant: a resized image whose long side <= the crop's short side is padded to the crop
  and run whole; otherwise it is padded up to the crop where smaller and covered by windows with
  stride ``int(2/3 crop)``, edge windows padded to the crop.
* Each window/whole pass also runs horizontally flipped when ``flip``.

:func:`resolve` first fills a request's omitted options with the model's protocol defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from service.contract import IMAGE, SegmentationMetadata
from service.errors import Unprocessable
from service.imaging.resize import resize_image
from service.tasks.common import Limits
from service.tasks.segmentation.schemas import SegmentOptions

Variant = Literal["cityscapes", "base"]


@dataclass(frozen=True)
class SegmentationRequest:
    """A request's options with the model's defaults applied (what the task runs)."""

    options: SegmentOptions
    scales: list[float]
    flip: bool
    window: Variant


def resolve(options: SegmentOptions, extras: dict[str, Any], meta: SegmentationMetadata,
            limits: Limits) -> SegmentationRequest:
    """The options a request runs with; 422 ``invalid_options`` for outputs the model lacks."""
    proto = meta.segmentation
    if options.label_ids and not meta.label_ids:
        raise Unprocessable(f"invalid options: label_ids: model '{meta.name}' ({meta.dataset}) has "
                            "no label id mapping", code="invalid_options")
    if options.scales == "multi":
        scales = list(proto.multi_scales)
    elif options.scales is None:
        scales = list(proto.scales)
    else:
        scales = [float(s) for s in options.scales]
    flip = proto.flip if options.flip is None else bool(options.flip)
    return SegmentationRequest(options, scales, flip, options.window or proto.window)


def plan(req: SegmentationRequest, meta: SegmentationMetadata,
         image_size: tuple[int, int]) -> "SegPlan":
    """The request's passes for an image of ``image_size = (h, w)``."""
    return plan_segmentation(image_size, meta, scales=req.scales, flip=req.flip,
                             variant=req.window, confidence=req.options.confidence)


@dataclass(frozen=True)
class Window:
    """A pass's region ``[y0:y1, x0:x1]`` of the scaled (possibly padded) image."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass
class ScalePlan:
    """The passes of one scale."""

    scale: float
    size: tuple[int, int]  # resized image (h, w)
    canvas: tuple[int, int]  # prediction canvas (>= size; padded size in the base variant)
    pass_size: tuple[int, int]  # network input (h, w) of every pass of this scale
    windows: list[Window] | None  # None: one whole-image pass (padded to pass_size)
    first_pass: int = 0  # index of this scale's first pass in the request's pass list

    @property
    def n_regions(self) -> int:
        return 1 if self.windows is None else len(self.windows)


@dataclass
class SegPlan:
    """Every network pass of one request, and how to merge them."""

    original_size: tuple[int, int]
    source_size: tuple[int, int]  # after LIP's square resize (else == original_size)
    scales: list[ScalePlan]
    flip: bool
    variant: Variant
    align_corners: bool
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    output_stride: int = 4  # input pixels per logit (the protocol's)
    confidence: bool = False  # the merge also computes max score / sum of scores

    reduce_hint: ClassVar[str] = "use fewer or smaller scales, no flip, or a smaller image"

    @property
    def passes_per_region(self) -> int:
        return 2 if self.flip else 1

    def region_first(self, sp: ScalePlan, r: int) -> int:
        """Index of region ``r``'s first pass (its unmirrored one) in scale ``sp``."""
        return sp.first_pass + r * self.passes_per_region

    def scale_passes(self, sp: ScalePlan) -> range:
        """Indices of every pass of scale ``sp`` (plan order: per region, then its mirror)."""
        return range(sp.first_pass, sp.first_pass + sp.n_regions * self.passes_per_region)

    @property
    def n_passes(self) -> int:
        return sum(s.n_regions for s in self.scales) * self.passes_per_region

    @property
    def n_pixels(self) -> int:
        """Network-input pixels of all passes together."""
        per_region = sum(s.n_regions * s.pass_size[0] * s.pass_size[1] for s in self.scales)
        return per_region * self.passes_per_region

    def source_image(self, rgb: np.ndarray) -> np.ndarray:
        """The uint8 HWC image the scales are taken from: ``rgb``, or LIP's rounded square resize
        (the official code resizes the *uint8* image, OpenCV fixed point, before normalising)."""
        if self.source_size == self.original_size:
            return rgb
        return resize_image(rgb, self.source_size)

    def passes(self, rgb: np.ndarray) -> "SegmentationPasses":
        """The network inputs in plan order, made on demand (see :class:`SegmentationPasses`)."""
        return SegmentationPasses(self, rgb)


class SegmentationPasses:
    """The passes of a :class:`SegPlan` (``image``: CHW float32 pixels, padding 0 = the official
    ``-mean/std``), made when the runner batches them: a request never holds all its inputs
    (30 passes of a 2048x1024 image at 6 scales + flip are 0.7 GB).

    Per scale, per region: the pass, then (with flip) its mirror image. A scale of another size
    is the official float resize of the source image, kept while its passes are made (the last
    one asked for); a pass is a view of it (a window, a transposition, a mirror) where no padding
    is needed, and the runner copies it into the batch. A scale at the source size takes its
    passes straight from the uint8 source, converted to float32 CHW in one step: the same values,
    and a single-scale request makes no float copy of the whole image (25 MB at 2048x1024).
    """

    def __init__(self, plan: SegPlan, rgb: np.ndarray) -> None:
        self.plan = plan
        self._src = plan.source_image(rgb)
        self._index = [(k, r, flipped) for k, sp in enumerate(plan.scales)
                       for r in range(sp.n_regions) for flipped in ((False, True) if plan.flip
                                                                    else (False,))]
        self._scale: tuple[int, np.ndarray] | None = None
        self._float_src: np.ndarray | None = None  # made for the first resize

    def __len__(self) -> int:
        return len(self._index)

    def signature(self, i: int) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        """``image``'s shape and dtype (every pass of a scale has the scale's pass size)."""
        ph, pw = self.plan.scales[self._index[i][0]].pass_size
        return ((IMAGE, (3, ph, pw), "<f4"),)

    def _scaled(self, k: int) -> np.ndarray:
        """Scale ``k``'s HWC image: the uint8 source at its own size, else float32 resized."""
        size = self.plan.scales[k].size
        if size == self._src.shape[:2]:
            return self._src
        if self._scale is None or self._scale[0] != k:
            self._scale = None  # release the previous scale first
            if self._float_src is None:
                self._float_src = self._src.astype(np.float32)
            # The official resize of the float image (OpenCV INTER_LINEAR, channels last).
            self._scale = (k, resize_image(self._float_src, size))
        return self._scale[1]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        k, r, flipped = self._index[i]
        sp = self.plan.scales[k]
        h, w = sp.size
        win = Window(0, h, 0, w) if sp.windows is None else sp.windows[r]
        crop = self._scaled(k)[win.y0 : min(win.y1, h), win.x0 : min(win.x1, w)].transpose(2, 0, 1)
        ph, pw = sp.pass_size
        if crop.shape[1:] != (ph, pw):  # padded, then mirrored (the padding too), as officially
            padded = np.zeros((3, ph, pw), np.float32)
            padded[:, : crop.shape[1], : crop.shape[2]] = crop
            crop = padded
        if flipped:
            crop = crop[:, :, ::-1]
        if crop.dtype != np.float32:  # a pass of the uint8 source: one conversion, into CHW
            crop = crop.astype(np.float32, order="C")
        return {IMAGE: crop}


def scaled_size(h: int, w: int, base_size: int, scale: float) -> tuple[int, int]:
    """The official ``multi_scale_aug`` size: long side ``int(base*s+0.5)``, aspect kept."""
    long_size = int(base_size * scale + 0.5)
    if h > w:
        new_h, new_w = long_size, int(w * long_size / h + 0.5)
    else:
        new_w, new_h = long_size, int(h * long_size / w + 0.5)
    return max(1, new_h), max(1, new_w)


def _cityscapes_windows(h: int, w: int, ch: int, cw: int) -> list[Window]:
    rows = int(math.ceil((h - ch) / ch)) + 1
    cols = int(math.ceil((w - cw) / cw)) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * ch + ch, h)
            x1 = min(c * cw + cw, w)
            out.append(Window(max(y1 - ch, 0), y1, max(x1 - cw, 0), x1))
    return out


def _base_windows(h: int, w: int, ch: int, cw: int) -> list[Window]:
    sh, sw = int(ch * 2.0 / 3.0), int(cw * 2.0 / 3.0)
    rows = int(math.ceil((h - ch) / sh)) + 1
    cols = int(math.ceil((w - cw) / sw)) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y0, x0 = r * sh, c * sw
            out.append(Window(y0, min(y0 + ch, h), x0, min(x0 + cw, w)))
    return out


def plan_segmentation(
    image_size: tuple[int, int],
    meta: SegmentationMetadata,
    *,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    variant: Variant | None = None,
    confidence: bool = False,
) -> SegPlan:
    """Plan the passes for an image of ``image_size = (h, w)`` with the model's protocol."""
    proto = meta.segmentation
    scales = list(proto.scales if scales is None else scales)
    flip = proto.flip if flip is None else bool(flip)
    variant = variant or proto.window
    ch, cw = proto.crop_size
    src = image_size
    if proto.resize_to_square is not None:
        src = (proto.resize_to_square, proto.resize_to_square)
    plans: list[ScalePlan] = []
    first = 0
    per_region = 2 if flip else 1
    for s in scales:
        h, w = scaled_size(src[0], src[1], proto.base_size, s)
        if variant == "cityscapes":
            if s <= 1.0:
                sp = ScalePlan(s, (h, w), (h, w), (h, w), None)
            else:
                sp = ScalePlan(s, (h, w), (h, w), (min(ch, h), min(cw, w)),
                               _cityscapes_windows(h, w, ch, cw))
        else:
            if max(h, w) <= min(ch, cw):
                sp = ScalePlan(s, (h, w), (max(h, ch), max(w, cw)), (ch, cw), None)
            else:
                canvas = (max(h, ch), max(w, cw))
                sp = ScalePlan(s, (h, w), canvas, (ch, cw), _base_windows(*canvas, ch, cw))
        sp.first_pass = first
        first += sp.n_regions * per_region
        plans.append(sp)
    return SegPlan(
        original_size=tuple(image_size), source_size=tuple(src), scales=plans, flip=flip,
        variant=variant, align_corners=meta.align_corners,
        flip_pairs=[(int(i), int(j)) for i, j in meta.flip_pairs],
        output_stride=proto.output_stride, confidence=confidence,
    )

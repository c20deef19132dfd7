"""Object detection (HRNetV2p Faster R-CNN): request options, test-time plan, merge, response.

The official test (mmdetection ``ImageTransform``): ``mmcv.imrescale`` with scale
``min(1333 / long, 800 / short)`` and size ``int(w * s + 0.5) x int(h * s + 0.5)`` (OpenCV bilinear
on the uint8 image, reproduced bit-exactly by :func:`service.resize.resize_uint8_opencv`), then the
normalised image is padded bottom/right with 0 to a multiple of 32, i.e. the *mean pixel* here
because the graph normalises. Each pass sends ``image`` and ``image_size`` = (resized h, w) before
padding (models exported before that input existed get ``image`` alone). The graph returns boxes
in network-input pixels clipped to ``image_size``; they are divided by the scale factor (per axis
for MMDetection 2.x+ models).

Response boxes are ``[x1, y1, x2, y2]`` in original-image pixels in the continuous frame (the
top-left pixel covers ``[0,1] x [0,1]``): legacy (inclusive-pixel) models' ``x2, y2`` get ``+1``,
so ``x2 - x1`` is the official COCO width either way.

Optional test-time augmentation: extra scales (multiplying ``max_size``) and a horizontal flip;
their detections are merged by per-class NMS (the model's IoU) or weighted box fusion.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service import boxes as bx
from service.errors import Unprocessable
from service.contract import DetectionProtocol, ModelMetadata
from service.metrics import Timings
from service.schemas import EncodedImage, ImageInput, ImageResult, TimingsMs
from service.resize import resize_uint8_opencv


class DetectOptions(BaseModel):
    """Options of ``POST /detect`` (form fields, query parameters or JSON fields)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the detection default.")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                          description="Minimum score (default: the model's 0.05).")
    max_detections: int | None = Field(None, ge=1, le=1000, description="Most boxes returned.")
    classes: list[str | int] | None = Field(
        None, description="Keep only these classes: names or label indices (1..80 for COCO).")
    scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=6,
                                description="Multiples of the model's max_size (TTA when > 1).")
    flip: bool = Field(False, description="Also run the horizontally flipped image (TTA).")
    merge: Literal["nms", "wbf"] = Field("nms", description="How TTA passes are merged.")
    max_size: tuple[int, int] | None = Field(
        None, description="(long, short) resize limits; default the model's (1333, 800).")
    overlay: bool = False
    overlay_format: Literal["jpeg", "png"] = "jpeg"

    @field_validator("scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not (0.1 <= s <= 4.0) for s in v):
            raise ValueError("scales must lie in [0.1, 4]")
        return v

    @field_validator("max_size")
    @classmethod
    def _size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (min(v) < 32 or max(v) > 4096):
            raise ValueError("max_size sides must lie in [32, 4096]")
        return v

    @field_validator("classes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):  # "person,dog" from a form field or query string
            return [p.strip() for p in v.split(",") if p.strip()]
        return v


class DetectRequest(ImageInput, DetectOptions):
    """JSON body of ``POST /detect``: a base64 image plus options."""


class Detection(BaseModel):
    label: str
    label_index: int = Field(description="Index into the model's labels (0 = background).")
    category_id: int | None = Field(None, description="Dataset category id (COCO), if known.")
    score: float
    box: list[float] = Field(description="[x1, y1, x2, y2], original image pixels.")


class DetectResponse(ImageResult):
    """``POST /detect`` answer."""

    options: dict
    detections: list[Detection]
    overlay: EncodedImage | None = None
    timings_ms: TimingsMs


SIZE_INPUT = "image_size"


class DetPass:
    """One network pass: the letterboxed input and how to map its boxes back."""

    def __init__(self, array: np.ndarray, resized: tuple[int, int], scale_xy: tuple[float, float],
                 flipped: bool) -> None:
        self.array = array
        self.resized = resized  # (h, w) before padding
        self.scale_xy = scale_xy
        self.flipped = flipped

    def inputs(self, meta: ModelMetadata) -> dict[str, np.ndarray]:
        """The graph inputs of this pass (no batch dim): ``image`` and, when the model takes it,
        ``image_size`` = ``[valid_h, valid_w]`` int64."""
        out = {meta.inputs[0].name: self.array}
        if any(spec.name == SIZE_INPUT for spec in meta.inputs):
            out[SIZE_INPUT] = np.asarray(self.resized, np.int64)
        return out


def rescale_size(h: int, w: int, max_size: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv ``imrescale``: (new_h, new_w, scale) with ``int(x * scale + 0.5)`` rounding."""
    long_max, short_max = max(max_size), min(max_size)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5), scale


def letterbox(rgb: np.ndarray, divisor: int, mean_pixel: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` -> ``[3, H', W']`` FP32 padded bottom/right with the mean pixel."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    out = np.empty((3, ph, pw), np.float32)
    out[:] = mean_pixel.reshape(3, 1, 1)
    out[:, :h, :w] = rgb.transpose(2, 0, 1)
    return out


def planned_pixels(height: int, width: int, meta: ModelMetadata, options: DetectOptions) -> int:
    """Network-input pixels the request's passes add up to (computed before any resizing)."""
    proto = meta.detection or DetectionProtocol()
    base = options.max_size or proto.max_size
    d = proto.size_divisor
    total = 0
    for s in options.scales:
        nh, nw, _ = rescale_size(height, width, (int(round(base[0] * s)), int(round(base[1] * s))))
        total += (-(-max(nh, 1) // d) * d) * (-(-max(nw, 1) // d) * d)
    return total * (2 if options.flip else 1)


def plan_passes(image: np.ndarray, meta: ModelMetadata, options: DetectOptions) -> list[DetPass]:
    """The network passes of a request (scales x flips)."""
    proto = meta.detection or DetectionProtocol()
    base = options.max_size or proto.max_size
    mean = np.asarray(meta.normalization.mean, np.float32) * np.float32(
        meta.normalization.pixel_scale)
    legacy = proto.box_convention == "legacy_plus_one"
    h, w = image.shape[:2]
    passes = []
    for s in options.scales:
        limits = (int(round(base[0] * s)), int(round(base[1] * s)))
        nh, nw, scale = rescale_size(h, w, limits)
        nh, nw = max(nh, 1), max(nw, 1)
        resized = resize_uint8_opencv(image, (nh, nw))
        # mmdet v0.6 divides by the one float scale; 2.x+ by per-axis factors new/old.
        sxy = (scale, scale) if legacy else (nw / w, nh / h)
        for flipped in ([False, True] if options.flip else [False]):
            src = resized[:, ::-1] if flipped else resized
            passes.append(DetPass(letterbox(src, proto.size_divisor, mean), (nh, nw), sxy, flipped))
    return passes


def to_original(p: DetPass, boxes: np.ndarray, width: int, height: int, legacy: bool
                ) -> np.ndarray:
    """Network-input boxes of pass ``p`` -> original-image boxes in the continuous frame."""
    nh, nw = p.resized
    off = 1.0 if legacy else 0.0
    b = boxes.astype(np.float64).copy()
    # The official code clips to the resized image; the graph does so from image_size already,
    # this also covers models exported without that input.
    b[:, 0::2] = np.clip(b[:, 0::2], 0, nw - off)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, nh - off)
    b[:, 0::2] /= p.scale_xy[0]
    b[:, 1::2] /= p.scale_xy[1]
    if legacy:
        b[:, 2:4] += 1.0  # inclusive x2 (mmdet's rescaled result) -> continuous frame
    if p.flipped:
        b = bx.hflip(b, float(width))
    return bx.clip(b, float(width), float(height))


def class_filter(meta: ModelMetadata, classes: list[str | int] | None) -> set[int] | None:
    """Label indices selected by names or indices; 422 for unknown ones."""
    if classes is None:
        return None
    names = {n: i for i, n in enumerate(meta.labels)}
    out = set()
    for c in classes:
        # isdecimal, not isdigit: int() refuses digits such as '²' that isdigit accepts.
        if isinstance(c, int) or (isinstance(c, str) and c.isdecimal()):
            i = int(c)
            if not 1 <= i < len(meta.labels):
                raise Unprocessable(f"class index {i} out of range 1..{len(meta.labels) - 1}",
                                    code="invalid_options")
            out.add(i)
        elif c in names and names[c] != 0:
            out.add(names[c])
        else:
            raise Unprocessable(f"unknown class '{c}' for model '{meta.name}'",
                                code="invalid_options")
    return out


def merge_passes(passes: list[DetPass], results: list[dict[str, np.ndarray]], meta: ModelMetadata,
                 options: DetectOptions, width: int, height: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All passes' detections in original pixels, merged when there are several passes."""
    proto = meta.detection or DetectionProtocol()
    legacy = proto.box_convention == "legacy_plus_one"
    all_b, all_s, all_l = [], [], []
    for p, r in zip(passes, results):
        all_b.append(to_original(p, np.asarray(r["boxes"]).reshape(-1, 4), width, height, legacy))
        all_s.append(np.asarray(r["scores"], np.float64).reshape(-1))
        all_l.append(np.asarray(r["labels"], np.int64).reshape(-1))
    b, s, lab = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l)
    if len(passes) > 1 and len(b):
        if options.merge == "wbf":
            b, s, lab = bx.weighted_box_fusion(b, s, lab, proto.nms_iou, len(passes))
        else:
            keep = bx.batched_nms(b, s, lab, proto.nms_iou)
            b, s, lab = b[keep], s[keep], lab[keep]
    order = np.argsort(-s, kind="stable")
    return b[order], s[order], lab[order]


def draw_overlay(image: np.ndarray, dets: list[Detection], fmt: str) -> EncodedImage:
    """The image with boxes and labels drawn (PIL)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for d in dets:
        x1, y1, x2, y2 = d.box
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
        draw.text((x1 + 2, y1 + 2), f"{d.label} {d.score:.2f}", fill=(255, 255, 0))
    return EncodedImage.from_pil(im, fmt)  # type: ignore[arg-type]


async def run_detect(image: np.ndarray, meta: ModelMetadata, runner, options: DetectOptions, *,
                     timings: Timings | None = None,
                     max_network_pixels: int | None = None) -> DetectResponse:
    """The whole task for one decoded image (``H x W x 3`` uint8 RGB).

    ``max_network_pixels`` bounds the network-input pixels of all passes together (422 above it),
    so large ``max_size`` x ``scales`` x ``flip`` combinations cannot exhaust memory.
    """
    timings = timings if timings is not None else Timings()
    proto = meta.detection or DetectionProtocol()
    height, width = image.shape[:2]
    if max_network_pixels is not None:
        needed = planned_pixels(height, width, meta, options)
        if needed > max_network_pixels:
            raise Unprocessable(
                f"the request's passes need {needed} network-input pixels; the limit is "
                f"{max_network_pixels} (use fewer or smaller scales, no flip, or a smaller max_size)",
                code="too_many_pixels")
    wanted = class_filter(meta, options.classes)
    with timings.stage("preprocess"):
        passes = await asyncio.to_thread(plan_passes, image, meta, options)
    results = await runner.run(meta, [p.inputs(meta) for p in passes], timings=timings)
    with timings.stage("postprocess"):
        # TTA merges are Python loops (WBF of 12 passes x 100 boxes of one class: ~0.3 s).
        b, s, lab = await asyncio.to_thread(merge_passes, passes, results, meta, options, width,
                                            height)
        thr = proto.score_threshold if options.score_threshold is None else options.score_threshold
        keep = s > thr if thr > 0 else np.ones(len(s), bool)
        if wanted is not None:
            keep &= np.isin(lab, sorted(wanted))
        b, s, lab = b[keep], s[keep], lab[keep]
        limit = options.max_detections or proto.max_detections
        b, s, lab = b[:limit], s[:limit], lab[:limit]
        ids = meta.label_ids
        dets = [Detection(label=meta.labels[int(i)] if 0 <= i < len(meta.labels) else str(int(i)),
                          label_index=int(i),
                          category_id=int(ids[i]) if ids and 0 <= i < len(ids) else None,
                          score=round(float(sc), 6),
                          box=[round(float(v), 3) for v in box])
                for box, sc, i in zip(b, s, lab)]
    overlay = None
    if options.overlay:
        with timings.stage("encode"):
            overlay = await asyncio.to_thread(draw_overlay, image, dets, options.overlay_format)
    return DetectResponse(
        **DetectResponse.head(meta, width, height),
        options={"score_threshold": thr, "max_detections": limit,
                 "classes": sorted(wanted) if wanted is not None else None,
                 "scales": options.scales, "flip": options.flip, "merge": options.merge,
                 "max_size": list(options.max_size or proto.max_size),
                 "network_inputs": [list(p.array.shape[1:]) for p in passes],
                 "box_convention": proto.box_convention},
        detections=dets, overlay=overlay, timings_ms=timings.as_ms())

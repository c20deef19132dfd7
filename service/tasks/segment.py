"""Segmentation: request options, then plan -> infer -> merge -> encode (official procedure)."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from service import encode
from service.errors import Unprocessable
from service.contract import ModelMetadata
from service.metrics import Timings
from service.runner import InferenceRunner
from service.schemas import EncodedImage, ImageInput, TaskResult, TimingsMs
from service.settings import Settings
from service.tta import SegPlan, make_passes, merge_segmentation, plan_segmentation


class SegmentOptions(BaseModel):
    """Options of a segmentation request. Omitted test-time options take the model's defaults."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the default segmentation model.")
    scales: list[float] | Literal["multi"] | None = Field(
        None, description="Test scales (the long side becomes base_size*scale). 'multi': the "
        "model's official multi-scale set. Default: the model's scales (usually [1.0]).",
    )
    flip: bool | None = Field(None, description="Also run mirrored passes (default: model's).")
    window: Literal["cityscapes", "base"] | None = Field(
        None, description="Sliding-window variant override (default: model's).",
    )
    label_map: bool = Field(True, description="Return the label map as a palette PNG (base64).")
    rle: bool = Field(False, description="Return a COCO RLE mask per class present.")
    confidence: bool = Field(False, description="Return the per-pixel confidence (max score / "
                             "sum of scores) as an 8-bit PNG.")
    overlay: bool = Field(False, description="Return the image blended with the class colours.")
    overlay_format: Literal["jpeg", "png"] = "jpeg"
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the class colours.")
    label_ids: bool = Field(False, description="Also return the map in dataset label ids "
                            "(Cityscapes: train id -> id) as an 8-bit PNG.")

    @field_validator("scales")
    @classmethod
    def _check_scales(cls, v):  # type: ignore[no-untyped-def]
        if isinstance(v, list):
            if not 1 <= len(v) <= 8:
                raise ValueError("give 1 to 8 scales")
            for s in v:
                if not 0.1 <= s <= 4.0:
                    raise ValueError(f"scale {s} outside 0.1..4.0")
        return v


class SegmentRequest(ImageInput, SegmentOptions):
    """JSON body of ``POST /segment``: a base64 image plus options."""


class ClassStat(BaseModel):
    """One class present in the label map."""

    id: int
    name: str
    pixels: int
    fraction: float = Field(description="pixels / (width * height).")
    rle: dict | None = Field(None, description="COCO RLE {size: [h, w], counts} of this class.")


class UsedOptions(BaseModel):
    """The test-time options a request ran with (request values, else the model's defaults)."""

    scales: list[float]
    flip: bool
    window: str
    base_size: int
    crop_size: tuple[int, int]
    resize_to_square: int | None
    align_corners: bool
    passes: int


class SegmentResponse(TaskResult):
    """``POST /segment`` answer: the shared head (model, random_init, image_size), then the
    options used, the classes present and the requested maps (each ``image_size``)."""

    options: UsedOptions = Field(description="Options actually used.")
    labels: list[str] = Field(description="Class names; a label map pixel indexes this list.")
    classes: list[ClassStat]
    label_map: EncodedImage | None = Field(
        None, description="Indexed PNG: pixel value = class index, palette = dataset colours."
    )
    confidence: EncodedImage | None = Field(
        None, description="8-bit PNG of max score / sum of scores (255 = 1), if requested."
    )
    overlay: EncodedImage | None = Field(None, description="The image blended with the class "
                                         "colours, if requested.")
    label_ids: EncodedImage | None = Field(None, description="8-bit PNG of dataset label ids "
                                           "(Cityscapes), if requested.")
    timings_ms: TimingsMs


class SegmentOutcome:
    """Labels (and optional confidence) of one request, with the plan that produced them."""

    def __init__(self, labels: np.ndarray, confidence: np.ndarray | None, plan: SegPlan,
                 scales: list[float]) -> None:
        self.labels = labels
        self.confidence = confidence
        self.plan = plan
        self.scales = scales


def resolve_scales(opts: SegmentOptions, meta: ModelMetadata) -> list[float]:
    """The scales a request runs."""
    proto = meta.segmentation
    assert proto is not None
    if opts.scales == "multi":
        return list(proto.multi_scales)
    if opts.scales is None:
        return list(proto.scales)
    return [float(s) for s in opts.scales]


async def segment(
    rgb: np.ndarray,
    meta: ModelMetadata,
    opts: SegmentOptions,
    runner: InferenceRunner,
    settings: Settings,
    timings: Timings,
) -> SegmentOutcome:
    """Run the official test procedure on ``rgb`` (H x W x 3 uint8) with ``meta``."""
    scales = resolve_scales(opts, meta)
    plan = plan_segmentation(rgb.shape[:2], meta, scales=scales, flip=opts.flip, variant=opts.window)
    if plan.n_passes > settings.max_passes:
        raise Unprocessable(
            f"the request needs {plan.n_passes} network passes; the limit is {settings.max_passes} "
            "(use fewer or smaller scales, or a smaller image)", code="too_many_passes",
        )
    if plan.n_pixels > settings.max_network_pixels:
        raise Unprocessable(
            f"the request's passes need {plan.n_pixels} network-input pixels; the limit is "
            f"{settings.max_network_pixels} (use fewer or smaller scales, or no flip)",
            code="too_many_pixels",
        )
    t0 = time.perf_counter()
    passes = await run_in_threadpool(make_passes, rgb, plan)
    timings.add("preprocess", time.perf_counter() - t0)
    out_name = meta.outputs[0].name
    results = await runner.run(meta, passes, timings=timings)
    del passes
    logits = [r[out_name] for r in results]
    t1 = time.perf_counter()
    merged = await run_in_threadpool(
        lambda: merge_segmentation(plan, logits, with_confidence=opts.confidence)
    )
    timings.add("postprocess", time.perf_counter() - t1)
    return SegmentOutcome(merged.labels, merged.confidence, plan, scales)


def build_response(
    rgb: np.ndarray, meta: ModelMetadata, opts: SegmentOptions, out: SegmentOutcome,
    timings: Timings,
) -> SegmentResponse:
    """Encode the outcome as the JSON response (CPU work: call from a thread)."""
    t0 = time.perf_counter()
    proto = meta.segmentation
    assert proto is not None
    labels = out.labels
    stats = encode.class_stats(labels, meta.labels)
    if opts.rle:
        rles = encode.rle_per_class(labels, [s["id"] for s in stats])
        for s in stats:
            s["rle"] = rles[s["id"]]
    enc = EncodedImage.of
    resp = SegmentResponse(
        **SegmentResponse.head(meta, int(rgb.shape[1]), int(rgb.shape[0])),
        options=UsedOptions(
            scales=out.scales, flip=out.plan.flip, window=out.plan.variant,
            base_size=proto.base_size, crop_size=tuple(proto.crop_size),
            resize_to_square=proto.resize_to_square, align_corners=meta.align_corners,
            passes=out.plan.n_passes,
        ),
        labels=list(meta.labels),
        classes=[ClassStat(**s) for s in stats],
        label_map=enc("png", encode.label_png(labels, meta.palette)) if opts.label_map else None,
        confidence=enc("png", encode.gray_png(out.confidence))
        if opts.confidence and out.confidence is not None else None,
        overlay=enc(opts.overlay_format, encode.overlay(
            rgb, labels, meta.palette, alpha=opts.overlay_alpha, fmt=opts.overlay_format))
        if opts.overlay else None,
        label_ids=enc("png", encode.gray_png(encode.map_label_ids(labels, meta.label_ids).astype(np.uint8)))
        if opts.label_ids and meta.label_ids else None,
    )
    timings.add("encode", time.perf_counter() - t0)
    resp.timings_ms = timings.as_ms()
    return resp

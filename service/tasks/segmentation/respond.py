"""Segmentation answers: the label map as JSON (class stats, RLE, PNGs, overlay) or as a PNG."""

from __future__ import annotations

import numpy as np

from service.contract import SegmentationMetadata
from service.imaging import encode
from service.imaging.draw import label_overlay
from service.tasks.common import JSON, Binary
from service.tasks.schemas import EncodedImage
from service.tasks.segmentation.merge import MergeResult
from service.tasks.segmentation.plan import SegmentationRequest, SegPlan
from service.tasks.segmentation.schemas import ClassStat, SegmentResponse, UsedOptions

PNG = "image/png"


def respond(rgb: np.ndarray, meta: SegmentationMetadata, req: SegmentationRequest, plan: SegPlan,
            merged: MergeResult, media: str = JSON) -> SegmentResponse | Binary:
    """The answer in ``media``: JSON, or the label map PNG itself (``image/png``)."""
    labels = merged.labels
    if media == PNG:
        return Binary(encode.label_png(labels, meta.palette), PNG)
    opts, proto = req.options, meta.segmentation
    stats = encode.class_stats(labels, meta.labels)
    if opts.rle:
        rles = encode.rle_per_class(labels, [s["id"] for s in stats])
        for s in stats:
            s["rle"] = rles[s["id"]]
    enc = EncodedImage.of
    return SegmentResponse(
        **SegmentResponse.head(meta, int(rgb.shape[1]), int(rgb.shape[0])),
        options=UsedOptions(
            scales=req.scales, flip=plan.flip, window=plan.variant,
            base_size=proto.base_size, crop_size=tuple(proto.crop_size),
            resize_to_square=proto.resize_to_square, align_corners=meta.align_corners,
            passes=plan.n_passes,
        ),
        labels=list(meta.labels),
        classes=[ClassStat(**s) for s in stats],
        label_map=enc("png", encode.label_png(labels, meta.palette)) if opts.label_map else None,
        confidence=enc("png", encode.gray_png(merged.confidence))
        if opts.confidence and merged.confidence is not None else None,
        overlay=enc(opts.overlay_format, label_overlay(
            rgb, labels, meta.palette, alpha=opts.overlay_alpha, fmt=opts.overlay_format))
        if opts.overlay else None,
        label_ids=enc("png", encode.gray_png(
            encode.map_label_ids(labels, meta.label_ids).astype(np.uint8)))
        if opts.label_ids and meta.label_ids else None,
    )

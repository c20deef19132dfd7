"""Segmentation answers: JSON (class stats, RLE, PNGs, overlay), or the label map alone as a PNG,
as raw bytes or as a NumPy ``.npy`` file (for clients that want neither PNG nor base64)."""

from __future__ import annotations

import io

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
RAW = "application/octet-stream"
NPY = "application/x-npy"
MEDIA_TYPES = (JSON, PNG, RAW, NPY)


def label_array(labels: np.ndarray) -> np.ndarray:
    """The label map in the smallest unsigned type that holds every class index (a uint8 map,
    as the merge graph gives, as it is)."""
    if labels.dtype == np.uint8:
        return labels
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def respond(rgb: np.ndarray, meta: SegmentationMetadata, req: SegmentationRequest, plan: SegPlan,
            merged: MergeResult, media: str = JSON) -> SegmentResponse | Binary:
    """The answer in ``media``: JSON, or the label map itself as a palette PNG (``image/png``),
    raw row-major bytes (``application/octet-stream``, shape and dtype in ``X-Label-Map-Shape``
    ``H,W`` and ``X-Label-Map-Dtype``) or a ``.npy`` file (``application/x-npy``)."""
    # Once, here: the encoders below then take the uint8 map as it is (no copy, no range scan).
    labels = label_array(merged.labels)
    if media == PNG:
        return Binary(encode.label_png(labels, meta.palette), PNG)
    if media in (RAW, NPY):
        described = {"X-Label-Map-Shape": f"{labels.shape[0]},{labels.shape[1]}",
                     "X-Label-Map-Dtype": str(labels.dtype)}
        if media == RAW:
            return Binary(labels.tobytes(), RAW, described)
        buf = io.BytesIO()
        np.save(buf, labels, allow_pickle=False)
        return Binary(buf.getvalue(), NPY, described)
    opts, proto = req.options, meta.segmentation
    stats = encode.class_stats(labels, meta.labels)
    if meta.label_ids:
        for s in stats:
            s["label_id"] = int(meta.label_ids[s["id"]]) if s["id"] < len(meta.label_ids) else None
    if opts.rle:
        rles = encode.rle_per_class(labels, [s["id"] for s in stats])
        for s in stats:
            s["rle"] = rles[s["id"]]
    if opts.polygons:
        for s in stats:
            s["polygons"] = encode.class_polygons(labels, s["id"], tolerance=opts.polygon_tolerance)
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
            rgb, labels, meta.palette, alpha=opts.overlay_alpha, fmt=opts.overlay_format,
            names=meta.labels, with_legend=opts.legend))
        if opts.overlay else None,
        label_ids=enc("png", encode.gray_png(
            encode.map_label_ids(labels, meta.label_ids).astype(np.uint8), categorical=True))
        if opts.label_ids and meta.label_ids else None,
    )

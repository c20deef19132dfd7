"""Detection answers: the kept boxes with class names, scores and dataset ids, and an overlay."""

from __future__ import annotations

import numpy as np

from service.contract import DetectionMetadata
from service.imaging.draw import boxes_overlay
from service.tasks.common import JSON
from service.tasks.detection.merge import Detections
from service.tasks.detection.plan import DetectionPlan, DetectionRequest
from service.tasks.detection.schemas import DetectResponse, Detection
from service.tasks.schemas import EncodedImage


def respond(image: np.ndarray, meta: DetectionMetadata, req: DetectionRequest, plan: DetectionPlan,
            kept: Detections, media: str = JSON) -> DetectResponse:
    """The JSON answer (the only media type of this task)."""
    height, width = image.shape[:2]
    opts, proto = req.options, meta.detection
    ids = meta.label_ids
    dets = [Detection(label=meta.labels[int(i)] if 0 <= i < len(meta.labels) else str(int(i)),
                      label_index=int(i),
                      category_id=int(ids[i]) if ids and 0 <= i < len(ids) else None,
                      score=round(float(sc), 6),
                      box=[round(float(v), 3) for v in box])
            for box, sc, i in zip(kept.boxes, kept.scores, kept.labels)]
    overlay = None
    if opts.overlay:
        data = boxes_overlay(image, [(d.box, f"{d.label} {d.score:.2f}") for d in dets],
                             fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    return DetectResponse(
        **DetectResponse.head(meta, width, height),
        options={"score_threshold": req.score_threshold, "max_detections": req.max_detections,
                 "classes": sorted(req.classes) if req.classes is not None else None,
                 "scales": opts.scales, "flip": opts.flip, "merge": opts.merge,
                 "max_size": list(req.max_size),
                 "network_inputs": [list(p.padded) for p in plan.passes_geometry],
                 "box_convention": proto.box_convention},
        detections=dets, overlay=overlay)

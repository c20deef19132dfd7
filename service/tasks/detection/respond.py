"""Detection answers: the kept boxes with class names, scores and dataset ids, and an overlay."""

from __future__ import annotations

import numpy as np

from service.contract import DetectionMetadata
from service.imaging.draw import boxes_overlay
from service.tasks.common import JSON
from service.tasks.detection.merge import Detections
from service.tasks.detection.plan import DetectionPlan, DetectionRequest
from service.tasks.detection.schemas import CocoResult, DetectResponse, Detection
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
                      box=[round(float(v), 3) for v in box], bbox=coco_bbox(box))
            for box, sc, i in zip(kept.boxes, kept.scores, kept.labels)]
    coco = None
    if opts.coco_results:
        coco = [CocoResult(image_id=opts.image_id, category_id=d.category_id, bbox=d.bbox,
                           score=d.score) for d in dets if d.category_id is not None]
    overlay = None
    if opts.overlay:
        data = boxes_overlay(image, [(d.box, d.label_index, f"{d.label} {d.score:.2f}")
                                     for d in dets], palette=meta.palette, fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    return DetectResponse(
        **DetectResponse.head(meta, width, height),
        options={"score_threshold": req.score_threshold, "max_detections": req.max_detections,
                 "classes": sorted(req.classes) if req.classes is not None else None,
                 "scales": opts.scales, "flip": opts.flip, "merge": opts.merge,
                 "max_size": list(req.max_size),
                 "network_inputs": [list(p.padded) for p in plan.passes_geometry],
                 "box_convention": proto.box_convention},
        detections=dets, coco_results=coco, overlay=overlay)


def coco_bbox(box: np.ndarray) -> list[float]:
    """``[x1, y1, x2, y2]`` -> COCO's ``[x, y, width, height]`` (the continuous frame makes
    ``x2 - x1`` the width for legacy and continuous models alike)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]

"""Detection answers: the kept boxes with class names, scores and dataset ids, instance masks
(COCO RLE, area, polygons), and an overlay."""

from __future__ import annotations

import numpy as np

from service.contract import DetectionMetadata
from service.imaging.draw import boxes_overlay
from service.imaging.encode import class_polygons
from service.tasks.common import JSON
from service.tasks.detection.masks import MaskRegion, region_rle
from service.tasks.detection.merge import Detections
from service.tasks.detection.plan import DetectionPlan, DetectionRequest
from service.tasks.detection.schemas import CocoResult, DetectResponse, Detection, InstanceMask
from service.tasks.schemas import EncodedImage


def respond(image: np.ndarray, meta: DetectionMetadata, req: DetectionRequest, plan: DetectionPlan,
            kept: Detections, media: str = JSON) -> DetectResponse:
    """The JSON answer (the only media type of this task)."""
    height, width = image.shape[:2]
    opts, proto = req.options, meta.detection
    ids = meta.label_ids
    masks = kept.masks if kept.masks is not None else [None] * len(kept.boxes)
    dets = [Detection(label=meta.labels[int(i)] if 0 <= i < len(meta.labels) else str(int(i)),
                      label_index=int(i),
                      category_id=int(ids[i]) if ids and 0 <= i < len(ids) else None,
                      score=round(float(sc), 6),
                      box=[round(float(v), 3) for v in box], bbox=coco_bbox(box),
                      mask=None if m is None else instance_mask(m, height, width, opts.polygons,
                                                                opts.polygon_tolerance))
            for box, sc, i, m in zip(kept.boxes, kept.scores, kept.labels, masks)]
    coco = None
    if opts.coco_results:
        coco = [CocoResult(image_id=opts.image_id, category_id=d.category_id, bbox=d.bbox,
                           score=d.score, segmentation=d.mask.rle if d.mask else None)
                for d in dets if d.category_id is not None]
    overlay = None
    if opts.overlay:
        data = boxes_overlay(image, [(d.box, d.label_index, f"{d.label} {d.score:.2f}")
                                     for d in dets], palette=meta.palette, fmt=opts.overlay_format,
                             masks=[(m.x0, m.y0, m.values) for m in kept.masks or ()])
        overlay = EncodedImage.of(opts.overlay_format, data)
    return DetectResponse(
        **DetectResponse.head(meta, width, height),
        options={"score_threshold": req.score_threshold, "max_detections": req.max_detections,
                 "classes": sorted(req.classes) if req.classes is not None else None,
                 "scales": opts.scales, "flip": opts.flip, "merge": opts.merge,
                 "max_size": list(req.max_size),
                 "network_inputs": [list(p.padded) for p in plan.passes_geometry],
                 "box_convention": proto.box_convention, "masks": req.masks,
                 **({"mask_paste": plan.mask.paste, "mask_threshold": plan.mask.threshold}
                    if plan.mask else {})},
        detections=dets, coco_results=coco, overlay=overlay)


def instance_mask(region: MaskRegion, height: int, width: int, polygons: bool,
                  tolerance: float) -> InstanceMask:
    """A boolean mask region as the answer's RLE (full image), area and optional polygons."""
    region = region.clipped(width, height)
    polys = None
    if polygons:
        polys = [{"exterior": [[x + region.x0, y + region.y0] for x, y in p["exterior"]],
                  "holes": [[[x + region.x0, y + region.y0] for x, y in h] for h in p["holes"]]}
                 for p in class_polygons(region.values, 1, tolerance=tolerance)] \
            if region.values.size else []
    return InstanceMask(rle=region_rle(region, height, width), area=int(region.values.sum()),
                        polygons=polys)


def coco_bbox(box: np.ndarray) -> list[float]:
    """``[x1, y1, x2, y2]`` -> COCO's ``[x, y, width, height]`` (the continuous frame makes
    ``x2 - x1`` the width for legacy and continuous models alike)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]

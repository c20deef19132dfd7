"""Detection merge: every pass's boxes back in original-image pixels, TTA passes merged, then the
request's filters (score threshold, classes, the most boxes).

The graph returns boxes in network-input pixels clipped to ``image_size``; they are divided by
the scale factor (per axis for MMDetection 2.x+ models). Answer boxes are ``[x1, y1, x2, y2]`` in
the continuous frame (the top-left pixel covers ``[0,1] x [0,1]``): legacy (inclusive-pixel)
models' ``x2, y2`` get ``+1``, so ``x2 - x1`` is the official COCO width either way. Several
passes are merged by per-class NMS (the model's IoU) or weighted box fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract import BOXES, LABELS, SCORES
from service.tasks.detection import boxes as bx
from service.tasks.detection.plan import DetectionPlan, DetPass


@dataclass(frozen=True)
class Detections:
    """Merged boxes ``[N, 4]`` (original pixels), scores ``[N]`` and labels ``[N]``, best first."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def keep(self, mask: np.ndarray) -> "Detections":
        """The detections where ``mask`` is true."""
        return Detections(self.boxes[mask], self.scores[mask], self.labels[mask])


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


def merge(plan: DetectionPlan, outputs: list[dict[str, np.ndarray]]) -> Detections:
    """All passes' detections in original pixels, merged when there are several passes, best
    first, then the request's filters (:func:`select`)."""
    height, width = plan.image_size
    all_b, all_s, all_l = [], [], []
    for p, r in zip(plan.passes_geometry, outputs):
        all_b.append(to_original(p, np.asarray(r[BOXES]).reshape(-1, 4), width, height,
                                 plan.legacy))
        all_s.append(np.asarray(r[SCORES], np.float64).reshape(-1))
        all_l.append(np.asarray(r[LABELS], np.int64).reshape(-1))
    b, s, lab = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l)
    if plan.n_passes > 1 and len(b):
        # TTA merges are Python loops (WBF of 12 passes x 100 boxes of one class: ~0.3 s).
        if plan.merge_rule == "wbf":
            b, s, lab = bx.weighted_box_fusion(b, s, lab, plan.nms_iou, plan.n_passes)
        else:
            keep = bx.batched_nms(b, s, lab, plan.nms_iou)
            b, s, lab = b[keep], s[keep], lab[keep]
    order = np.argsort(-s, kind="stable")
    merged = Detections(b[order], s[order], lab[order])
    return select(merged, plan.score_threshold, plan.classes, plan.max_detections)


def select(dets: Detections, score_threshold: float, classes: frozenset[int] | None,
           limit: int) -> Detections:
    """Detections above ``score_threshold`` of ``classes`` (None: all), at most ``limit``."""
    keep = dets.scores > score_threshold if score_threshold > 0 else np.ones(len(dets.scores), bool)
    if classes is not None:
        keep &= np.isin(dets.labels, sorted(classes))
    kept = dets.keep(keep)
    return Detections(kept.boxes[:limit], kept.scores[:limit], kept.labels[:limit])

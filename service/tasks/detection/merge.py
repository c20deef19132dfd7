"""Detection merge: every pass's boxes back in original-image pixels, TTA passes merged, then the
request's filters (score threshold, classes, the most boxes).

The graph returns boxes in network-input pixels clipped to ``image_size``; they are divided by
the scale factor (per axis for MMDetection 2.x+ models). Answer boxes are ``[x1, y1, x2, y2]`` in
the continuous frame (the top-left pixel covers ``[0,1] x [0,1]``): legacy (inclusive-pixel)
models' ``x2, y2`` get ``+1``, so ``x2 - x1`` is the official COCO width either way. Several
passes are merged by per-class NMS (the model's IoU) or weighted box fusion. Mask R-CNN models
asked for masks get each kept detection's mask pasted into the image by the origin's official
rule (:mod:`service.tasks.detection.masks`, which also states the TTA rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract import BOXES, LABELS, MASKS, SCORES, MaskProtocol
from service.tasks.detection import boxes as bx
from service.tasks.detection import masks as mk
from service.tasks.detection.plan import DetectionPlan, DetPass


@dataclass(frozen=True)
class Detections:
    """Merged boxes ``[N, 4]`` (original pixels), scores ``[N]`` and labels ``[N]``, best first;
    ``masks``: each detection's boolean mask region in original pixels (when asked for)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: list[mk.MaskRegion] | None = None

    def keep(self, mask: np.ndarray) -> "Detections":
        """The detections where ``mask`` is true."""
        masks = None if self.masks is None else [m for m, k in zip(self.masks, mask) if k]
        return Detections(self.boxes[mask], self.scores[mask], self.labels[mask], masks)

    def head(self, n: int) -> "Detections":
        """The first ``n`` detections."""
        masks = None if self.masks is None else self.masks[:n]
        return Detections(self.boxes[:n], self.scores[:n], self.labels[:n], masks)


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


def paste_box(p: DetPass, boxes: np.ndarray, legacy: bool) -> np.ndarray:
    """Network-input boxes of pass ``p`` -> the boxes the official mask paste uses, in the pass's
    own (possibly flipped) frame: divided by the scale factor in float32 (legacy: the one float
    scale, inclusive corners kept; 2.x+: per axis)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if legacy:
        return b / np.float32(p.scale_xy[0])
    sx, sy = p.scale_xy
    return b / np.array([sx, sy, sx, sy], np.float32)


def merge(plan: DetectionPlan, outputs: list[dict[str, np.ndarray]]) -> Detections:
    """All passes' detections in original pixels, merged when there are several passes, best
    first, then the request's filters (:func:`select`) and, when asked for, their masks."""
    height, width = plan.image_size
    all_b, all_s, all_l = [], [], []
    for p, r in zip(plan.passes_geometry, outputs):
        all_b.append(to_original(p, np.asarray(r[BOXES]).reshape(-1, 4), width, height,
                                 plan.legacy))
        all_s.append(np.asarray(r[SCORES], np.float64).reshape(-1))
        all_l.append(np.asarray(r[LABELS], np.int64).reshape(-1))
    b, s, lab = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l)
    src = np.arange(len(b))  # index into the concatenated pass detections (one pass: exact)
    if plan.n_passes > 1 and len(b):
        # TTA merges are Python loops (WBF of 12 passes x 100 boxes of one class: ~0.3 s).
        if plan.merge_rule == "wbf":
            b, s, lab = bx.weighted_box_fusion(b, s, lab, plan.nms_iou, plan.n_passes)
        else:
            keep = bx.batched_nms(b, s, lab, plan.nms_iou)
            b, s, lab = b[keep], s[keep], lab[keep]
    order = np.argsort(-s, kind="stable")
    src = src[order] if plan.n_passes == 1 else None  # type: ignore[assignment]
    merged = Detections(b[order], s[order], lab[order])
    keep_mask = _selected(merged, plan.score_threshold, plan.classes)
    kept = merged.keep(keep_mask).head(plan.max_detections)
    if plan.mask is None:
        return kept
    sources = None if src is None else src[keep_mask][: plan.max_detections]
    return Detections(kept.boxes, kept.scores, kept.labels,
                      instance_masks(plan, plan.mask, outputs, all_b, all_l, kept, sources))


def instance_masks(plan: DetectionPlan, proto: MaskProtocol, outputs: list[dict[str, np.ndarray]],
                   pass_boxes: list[np.ndarray], pass_labels: list[np.ndarray],
                   kept: Detections, sources: np.ndarray | None) -> list[mk.MaskRegion]:
    """Each kept detection's boolean mask in original pixels: its own pasted mask (one pass,
    ``sources`` = its index), or the mean of its members' pasted probabilities (TTA; see
    :mod:`service.tasks.detection.masks`)."""
    height, width = plan.image_size
    starts = np.cumsum([0] + [len(x) for x in pass_boxes])

    def pasted(k: int, i: int) -> mk.MaskRegion:
        p, r = plan.passes_geometry[k], outputs[k]
        box = paste_box(p, np.asarray(r[BOXES]).reshape(-1, 4)[i], plan.legacy)[0]
        probs = np.asarray(r[MASKS]).reshape(-1, proto.resolution, proto.resolution)
        region = mk.paste(proto, probs[i], box, height, width)
        return region.mirrored(width) if p.flipped else region

    out = []
    for n, (box, label) in enumerate(zip(kept.boxes, kept.labels)):
        if sources is not None:
            k = int(np.searchsorted(starts, sources[n], side="right") - 1)
            members = [(k, int(sources[n] - starts[k]))]
        else:
            members = []
            for k, (pb, pl) in enumerate(zip(pass_boxes, pass_labels)):
                same = np.flatnonzero(pl == label)
                if len(same) == 0:
                    continue
                ious = bx.iou_matrix(box[None], pb[same])[0]
                j = int(np.argmax(ious))
                if ious[j] > plan.nms_iou:
                    members.append((k, int(same[j])))
        if not members:  # a fused box no pass overlaps enough (WBF): an empty mask
            out.append(mk.MaskRegion(0, 0, np.zeros((0, 0), bool)))
            continue
        out.append(mk.binarize(proto, mk.average([pasted(k, i) for k, i in members])))
    return out


def _selected(dets: Detections, score_threshold: float, classes: frozenset[int] | None
              ) -> np.ndarray:
    """Boolean: above ``score_threshold`` and of ``classes`` (None: all)."""
    keep = dets.scores > score_threshold if score_threshold > 0 else np.ones(len(dets.scores), bool)
    if classes is not None:
        keep &= np.isin(dets.labels, sorted(classes))
    return keep


def select(dets: Detections, score_threshold: float, classes: frozenset[int] | None,
           limit: int) -> Detections:
    """Detections above ``score_threshold`` of ``classes`` (None: all), at most ``limit``."""
    return dets.keep(_selected(dets, score_threshold, classes)).head(limit)

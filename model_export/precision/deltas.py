"""The figures that compare a tier's outputs with FP32's on the same inputs, per task.

* segmentation: label agreement (argmax of the logits, at the network's 1/4 resolution: what the
  gateway's merge starts from) over all pixels and for the worst image; per class present in
  the FP32 labels, the IoU of the tier's and FP32's masks of that class;
* landmarks: decoded as the gateway does (official argmax + quarter-pixel shift,
  ``service.tasks.landmarks.geometry``), the displacement in crop pixels (mean, max) and an NME:
  mean displacement over the FP32 prediction's inter-ocular distance (the crop side when the
  dataset has no eye corners);
* detection: one-to-one matches (same label, IoU >= 0.5, in FP32 score order) over max(FP32,
  tier) detections, the matches' mean IoU and largest score difference.

All are against FP32, not ground truth: a tier's accuracy on a benchmark is FP32's minus at most
what these figures allow. Random weights have tiny logit margins (many near-ties between
classes and heatmap peaks), so their figures are far worse than a trained model's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from service.contract import BOXES, HEATMAPS, LABELS, LOGITS, SCORES
from service.tasks.landmarks.geometry import get_preds, refine_coords

from model_export.datasets import LANDMARK_INPUT_SIZE

Outputs = dict[str, np.ndarray]


def segmentation_deltas(refs: Sequence[Outputs], gots: Sequence[Outputs],
                        labels: Sequence[str]) -> dict[str, Any]:
    """Label agreement (all, worst image) and per-class IoU against FP32."""
    agree = total = 0
    worst = 1.0
    inter = np.zeros(len(labels), np.int64)
    union = np.zeros(len(labels), np.int64)
    present = np.zeros(len(labels), np.int64)
    for ref, got in zip(refs, gots, strict=True):
        a = ref[LOGITS].argmax(1).ravel()
        b = got[LOGITS].argmax(1).ravel()
        same = a == b
        agree += int(same.sum())
        total += a.size
        worst = min(worst, float(same.mean()))
        n = len(labels)
        present += np.bincount(a, minlength=n)[:n]
        inter += np.bincount(a[same], minlength=n)[:n]
        union += np.bincount(a, minlength=n)[:n] + np.bincount(b, minlength=n)[:n]
    union -= inter
    classes = {labels[c]: round(float(inter[c] / union[c]), 6)
               for c in range(len(labels)) if present[c] > 0}
    return {"label_agreement": agree / max(total, 1), "min_label_agreement": worst,
            "class_agreement": classes, "_class_pixels": {labels[c]: int(present[c])
                                                          for c in range(len(labels))
                                                          if present[c] > 0}}


def landmark_points(heatmaps: np.ndarray) -> np.ndarray:
    """Official decoding of ``[N, K, h, w]`` heatmaps to crop pixels ``[N, K, 2]`` (256x256)."""
    coords = refine_coords(heatmaps, get_preds(heatmaps)[0])
    h, w = heatmaps.shape[2:]
    scale = np.array([LANDMARK_INPUT_SIZE[1] / w, LANDMARK_INPUT_SIZE[0] / h])
    return (coords - 1.0) * scale


def landmark_deltas(refs: Sequence[Outputs], gots: Sequence[Outputs],
                    inter_ocular: tuple[int, int] | None) -> dict[str, Any]:
    """Displacement (crop px) and NME against FP32's decoded landmarks."""
    shifts: list[np.ndarray] = []
    nmes: list[np.ndarray] = []
    for ref, got in zip(refs, gots, strict=True):
        p = landmark_points(ref[HEATMAPS])
        q = landmark_points(got[HEATMAPS])
        d = np.linalg.norm(p - q, axis=-1)  # [N, K]
        if inter_ocular is not None:
            i, j = inter_ocular
            norm = np.linalg.norm(p[:, i] - p[:, j], axis=-1)
        else:
            norm = np.full(len(p), float(LANDMARK_INPUT_SIZE[0]))
        shifts.append(d.ravel())
        nmes.append(d.mean(axis=1) / np.maximum(norm, 1.0))  # >= 1 px: random eyes may meet
    s = np.concatenate(shifts)
    return {"mean_displacement_px": float(s.mean()), "max_displacement_px": float(s.max()),
            "nme": float(np.concatenate(nmes).mean())}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def detection_deltas(refs: Sequence[Outputs], gots: Sequence[Outputs], iou: float = 0.5
                     ) -> dict[str, Any]:
    """One-to-one box matches against FP32's detections."""
    matched = count = 0
    ious: list[float] = []
    score_diff = 0.0
    for ref, got in zip(refs, gots, strict=True):
        rb, rs, rl = ref[BOXES][0], ref[SCORES][0], ref[LABELS][0]
        gb, gs, gl = got[BOXES][0], got[SCORES][0], got[LABELS][0]
        count += max(len(rb), len(gb))
        if not len(rb) or not len(gb):
            continue
        m = _iou(rb.astype(np.float64), gb.astype(np.float64))
        m[rl[:, None] != gl[None, :]] = 0.0
        used = np.zeros(len(gb), bool)
        for i in np.argsort(-rs, kind="stable"):
            cand = np.where(~used & (m[i] >= iou))[0]
            if not len(cand):
                continue
            j = cand[np.argmax(m[i, cand])]
            used[j] = True
            matched += 1
            ious.append(float(m[i, j]))
            score_diff = max(score_diff, float(abs(gs[j] - rs[i])))
    return {"box_agreement": matched / count if count else 1.0,
            "mean_box_iou": float(np.mean(ious)) if ious else None,
            "max_score_diff": score_diff}


def task_deltas(task: str, refs: Sequence[Outputs], gots: Sequence[Outputs], *,
                labels: Sequence[str], inter_ocular: tuple[int, int] | None) -> dict[str, Any]:
    """The figures of ``task`` (keys of :class:`service.contract.TierDeltas`; a ``_class_pixels``
    helper entry for segmentation)."""
    if task == "segmentation":
        return segmentation_deltas(refs, gots, labels)
    if task == "landmarks":
        return landmark_deltas(refs, gots, inter_ocular)
    if task == "detection":
        return detection_deltas(refs, gots)
    raise ValueError(f"no precision deltas for task {task!r}")

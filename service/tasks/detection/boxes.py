"""Box math in numpy for the detection gateway: IoU, (per-class) NMS, weighted box fusion, flips.

Boxes are ``[N, 4]`` float arrays ``x1, y1, x2, y2`` in the continuous pixel frame (the top-left
pixel covers ``[0, 1] x [0, 1]``); ``offset=1`` gives mmdetection v0.6's inclusive-pixel IoU.
"""

from __future__ import annotations

import numpy as np


def area(boxes: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Areas of ``[N, 4]`` boxes (negative extents count as 0)."""
    wh = np.clip(boxes[:, 2:4] - boxes[:, 0:2] + offset, 0, None)
    return wh[:, 0] * wh[:, 1]


def iou_matrix(a: np.ndarray, b: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` -> ``[N, M]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.clip(rb - lt + offset, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a, offset)[:, None] + area(b, offset)[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, offset: float = 0.0) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first (suppress IoU > ``iou``)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        ious = iou_matrix(boxes[i : i + 1], boxes[rest], offset)[0]
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float,
                offset: float = 0.0) -> np.ndarray:
    """NMS within each label; kept indices sorted by descending score."""
    keep = [idx[nms(boxes[idx], scores[idx], iou, offset)]
            for lab in np.unique(labels) for idx in [np.where(labels == lab)[0]]]
    if not keep:
        return np.zeros(0, np.int64)
    out = np.concatenate(keep)
    return out[np.argsort(-scores[out], kind="stable")]


def weighted_box_fusion(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float,
                        num_passes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box fusion (Solovyev et al.) per label over the detections of ``num_passes``.

    Clusters boxes (in descending score order) whose IoU with a cluster's fused box exceeds
    ``iou``; the fused box is the score-weighted mean of its members, and its score the mean
    member score times ``min(members, num_passes) / num_passes``.
    """
    out_b, out_s, out_l = [], [], []
    for lab in np.unique(labels):
        idx = np.where(labels == lab)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        clusters: list[list[int]] = []
        fused: list[np.ndarray] = []
        for i in idx:
            if fused:
                ious = iou_matrix(boxes[i : i + 1], np.stack(fused))[0]
                j = int(np.argmax(ious))
                if ious[j] > iou:
                    clusters[j].append(int(i))
                    w = scores[clusters[j]]
                    fused[j] = (boxes[clusters[j]] * w[:, None]).sum(0) / w.sum()
                    continue
            clusters.append([int(i)])
            fused.append(boxes[i].astype(np.float64))
        for members, box in zip(clusters, fused):
            s = scores[members].mean() * min(len(members), num_passes) / num_passes
            out_b.append(box)
            out_s.append(s)
            out_l.append(lab)
    if not out_b:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    b, s, lab_arr = np.stack(out_b), np.asarray(out_s), np.asarray(out_l, np.int64)
    order = np.argsort(-s, kind="stable")
    return b[order], s[order], lab_arr[order]


def hflip(boxes: np.ndarray, width: float) -> np.ndarray:
    """Boxes of a horizontally flipped image of ``width`` pixels (continuous frame)."""
    out = boxes.copy()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def clip(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip boxes to ``[0, width] x [0, height]``."""
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out

"""Face-detection merge: MediaPipe's decoding of every pass, tiles back in image pixels, cut faces
dropped, then one weighted NMS over all passes and the request's filters.

Per pass (``TensorsToDetectionsCalculator`` with fixed-size anchors, reverse output order):
``score = sigmoid(clip(logit, +-score_clipping))``, kept when ``>= score_threshold``; box centre
``= regressor[0:2] / box_scale[0:2] + anchor``, size ``= regressor[2:4] / box_scale[2:4]``,
keypoint ``j = regressor[4+2j : 6+2j] / box_scale[0:2] + anchor`` (input-relative), boxes with a
non-positive side dropped. Tiles map to image pixels through their letterbox; a detection that
reaches into the :data:`~service.tasks.face_detection.plan.EDGE_MARGIN` band of an edge inside the
image is a cut face and dropped (another tile holds it whole).

All passes' detections then go through ``NonMaxSuppressionCalculator`` (``WEIGHTED``): best
first, every detection whose IoU with it exceeds ``nms_iou`` joins its cluster, the cluster's box
and keypoints are the score-weighted mean, its score the best one's (``plain``: the best alone).
Finally the ``max_faces`` best.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.contract import CLASSIFICATORS, REGRESSORS, FaceDetectionProtocol
from service.errors import BackendError
from service.tasks.detection.boxes import iou_matrix
from service.tasks.face_detection.plan import EDGE_MARGIN, FaceDetectionPlan, Tile


@dataclass(frozen=True)
class Faces:
    """Detected faces, best first: boxes ``[N, 4]``, scores ``[N]``, keypoints ``[N, K, 2]``
    (image pixels, continuous frame)."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def anchor_centres(proto: FaceDetectionProtocol) -> np.ndarray:
    """``[A, 2]`` anchor centres (x, y), input-relative, in the model's output order."""
    a = proto.anchors
    return _anchors(tuple(a.strides), tuple(a.offset), len(a.aspect_ratios),
                    a.interpolated_scale_aspect_ratio > 0, tuple(proto.input_size))


@lru_cache(maxsize=16)
def _anchors(strides: tuple[int, ...], offset: tuple[float, float], ratios: int,
             interpolated: bool, input_size: tuple[int, int]) -> np.ndarray:
    h, w = input_size
    parts = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * (ratios + (1 if interpolated else 0))
        fh, fw = -(-h // strides[i]), -(-w // strides[i])
        ys, xs = np.meshgrid((np.arange(fh) + offset[1]) / fh, (np.arange(fw) + offset[0]) / fw,
                             indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        parts.append(np.repeat(grid, per_cell, axis=0))
        i = j
    out = np.concatenate(parts)
    out.setflags(write=False)
    return out


def decode(regressors: np.ndarray, logits: np.ndarray, proto: FaceDetectionProtocol,
           threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass's raw tensors -> input-relative boxes ``[n, 4]``, scores ``[n]`` and keypoints
    ``[n, K, 2]`` of the anchors scoring ``>= threshold`` (in anchor order)."""
    anchors = anchor_centres(proto)
    reg = np.asarray(regressors, np.float64).reshape(len(anchors), -1)
    k = len(proto.keypoints)
    if reg.shape[1] < 4 + 2 * k:
        raise BackendError(f"the detector returned {reg.shape[1]} values per anchor; its "
                           f"protocol needs {4 + 2 * k}")
    clip = proto.score_clipping
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -clip, clip)))
    xs, ys, ws, hs = proto.box_scale
    keep = scores >= threshold
    keep &= (reg[:, 2] > 0) & (reg[:, 3] > 0)
    reg, a, scores = reg[keep], anchors[keep], scores[keep]
    cx, cy = reg[:, 0] / xs + a[:, 0], reg[:, 1] / ys + a[:, 1]
    bw, bh = reg[:, 2] / ws, reg[:, 3] / hs
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kp = reg[:, 4:4 + 2 * k].reshape(-1, k, 2) / np.array([xs, ys]) + a[:, None, :]
    return boxes, scores, kp


def _uncut(tile: Tile, boxes: np.ndarray) -> np.ndarray:
    """Detections clear of the margin of every tile edge that lies inside the image."""
    x0, y0, x1, y1 = tile.region
    m = EDGE_MARGIN * max(x1 - x0, y1 - y0)
    left, top, right, bottom = tile.cut_edges
    ok = np.ones(len(boxes), bool)
    if left:
        ok &= boxes[:, 0] >= x0 + m
    if top:
        ok &= boxes[:, 1] >= y0 + m
    if right:
        ok &= boxes[:, 2] <= x1 - m
    if bottom:
        ok &= boxes[:, 3] <= y1 - m
    return ok


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou: float,
                 weighted: bool = True) -> Faces:
    """MediaPipe's NMS (``WEIGHTED``, or plain greedy with ``weighted=False``), best first."""
    order = np.argsort(-scores, kind="stable")
    out_b, out_s, out_k = [], [], []
    while order.size:
        best = int(order[0])
        ious = iou_matrix(boxes[best:best + 1], boxes[order])[0]
        cluster = order[ious > iou]
        if not cluster.size:  # a degenerate box does not overlap itself
            cluster = order[:1]
        if weighted:
            w = scores[cluster]
            out_b.append((boxes[cluster] * w[:, None]).sum(0) / w.sum())
            out_k.append((keypoints[cluster] * w[:, None, None]).sum(0) / w.sum())
        else:
            out_b.append(boxes[best])
            out_k.append(keypoints[best])
        out_s.append(scores[best])
        order = order[(ious <= iou) & (order != best)]
    k = keypoints.shape[1] if keypoints.ndim == 3 else 0
    if not out_s:
        return Faces(np.zeros((0, 4)), np.zeros(0), np.zeros((0, k, 2)))
    return Faces(np.stack(out_b), np.asarray(out_s), np.stack(out_k))


def merge(plan: FaceDetectionPlan, outputs: list[dict[str, np.ndarray]]) -> Faces:
    """Every pass decoded into image pixels, cut faces dropped, one weighted NMS, the best
    ``max_faces``."""
    proto = plan.protocol
    all_b, all_s, all_k = [], [], []
    for tile, out in zip(plan.tiles, outputs, strict=True):
        boxes, scores, kp = decode(out[REGRESSORS], out[CLASSIFICATORS], proto,
                                   plan.score_threshold)
        boxes = tile.to_image(boxes.reshape(-1, 2, 2), plan.input_size).reshape(-1, 4)
        kp = tile.to_image(kp, plan.input_size)
        if len(plan.tiles) > 1:
            ok = _uncut(tile, boxes)
            boxes, scores, kp = boxes[ok], scores[ok], kp[ok]
        all_b.append(boxes)
        all_s.append(scores)
        all_k.append(kp)
    k = len(proto.keypoints)
    b = np.concatenate(all_b) if all_b else np.zeros((0, 4))
    s = np.concatenate(all_s) if all_s else np.zeros(0)
    kp = np.concatenate(all_k) if all_k else np.zeros((0, k, 2))
    faces = weighted_nms(b, s, kp.reshape(-1, k, 2), proto.nms_iou, proto.nms == "weighted")
    n = plan.max_faces
    return Faces(faces.boxes[:n], faces.scores[:n], faces.keypoints[:n])

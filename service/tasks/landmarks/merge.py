"""Facial-landmark merge: heatmaps (flip-averaged) -> official sub-pixel landmarks per face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract import HEATMAPS
from service.errors import BackendError
from service.tasks.landmarks.geometry import decode_heatmaps, flip_back
from service.tasks.landmarks.plan import LandmarkPlan


@dataclass(frozen=True)
class Landmarks:
    """Decoded points ``[N, K, 2]`` (image pixels), peaks ``[N, K]`` and the heatmap size."""

    points: np.ndarray
    confidence: np.ndarray
    heatmap_size: tuple[int, int]


def merge_heatmaps(outputs: list[np.ndarray], n_faces: int, flip: bool,
                   flip_pairs: list[tuple[int, int]]) -> np.ndarray:
    """``[N, K, H, W]`` heatmaps; with flip, the average of each face's plain and flipped-back maps."""
    hm = np.stack([np.asarray(o, dtype=np.float32) for o in outputs])
    if not flip:
        return hm
    hm = hm.reshape(n_faces, 2, *hm.shape[1:])
    return (hm[:, 0] + flip_back(hm[:, 1], flip_pairs)) * np.float32(0.5)


def merge(plan: LandmarkPlan, outputs: list[dict[str, np.ndarray]]) -> Landmarks:
    """The passes' ``heatmaps`` -> landmarks of every face of ``plan``.

    The heatmaps must have the model's ``heatmap_size`` (the decode's geometry depends on it).
    """
    if not plan.faces:  # faces=auto found none
        k = plan.num_landmarks
        return Landmarks(np.zeros((0, k, 2)), np.zeros((0, k)), tuple(plan.heatmap_size))
    hm = merge_heatmaps([o[HEATMAPS] for o in outputs], len(plan.faces), plan.flip,
                        plan.flip_pairs)
    if tuple(hm.shape[2:]) != tuple(plan.heatmap_size):
        raise BackendError(f"the network returned {hm.shape[2]}x{hm.shape[3]} heatmaps; the "
                           f"model's protocol says {plan.heatmap_size[0]}x{plan.heatmap_size[1]}")
    points, conf = decode_heatmaps(hm, plan.faces)
    return Landmarks(points, conf, (int(hm.shape[2]), int(hm.shape[3])))

"""Instance masks of Mask R-CNN models: the official paste-back, the TTA merge, COCO RLE.

A Mask R-CNN graph returns, per detection, the ``R x R`` (28x28) probabilities of its class over
its box. Pasting them into the original image follows the rule of the checkpoint's origin
(``MaskProtocol.paste``):

* ``legacy`` (mmdetection v0.6 / 1.x ``FCNMaskHead.get_seg_masks``): the box divided by the scale
  factor (float32) and truncated to whole pixels, ``w = x2 - x1 + 1`` (at least 1), the
  probabilities resized to ``w x h`` by ``mmcv.imresize`` (OpenCV bilinear), kept where
  ``> threshold``, written at ``[y1:y1+h, x1:x1+w]``;
* ``grid_sample`` (MMDetection 2.x/3.x ``_do_paste_mask`` on the CPU, ``skip_empty``): every pixel
  centre of the box grown to whole pixels plus one (clipped to the image) is sampled bilinearly
  (``grid_sample``, ``align_corners=False``, zeros outside the mask) at its position in the
  continuous box divided by the per-axis scale factors, kept where ``>= threshold``.

Only the box's region is ever computed (a :class:`MaskRegion`), never a full-size array per
instance; the RLE of the full image is assembled from the region's columns.

Test-time augmentation (several passes) merges each merged detection's masks: every pass
contributes its best-overlapping detection of the same class (IoU above the model's NMS IoU in
original pixels; the detection itself for its own pass), each member's probabilities are pasted
with its own box in its own pass (mirrored back for flipped passes), the pasted probabilities are
averaged over the members (zero outside a member's region), then thresholded. This is mmdet's
``merge_aug_masks`` (the mean of the augmentations' probabilities) applied to pasted masks,
since the graph computes each pass's masks for that pass's own boxes. One pass is the official
rule exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.contract import MaskProtocol


@dataclass(frozen=True)
class MaskRegion:
    """Values over the image region ``[y0:y0+h, x0:x0+w]`` (zero elsewhere)."""

    x0: int
    y0: int
    values: np.ndarray  # [h, w]: float probabilities, or bool after thresholding

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the region, exclusive end."""
        h, w = self.values.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def mirrored(self, width: int) -> "MaskRegion":
        """The region in the horizontally flipped image of ``width`` pixels."""
        x0, _, x1, _ = self.box
        return MaskRegion(width - x1, self.y0, self.values[:, ::-1])

    def clipped(self, width: int, height: int) -> "MaskRegion":
        """The part inside ``[0, width) x [0, height)``."""
        x0, y0, x1, y1 = self.box
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = max(min(x1, width), cx0), max(min(y1, height), cy0)
        return MaskRegion(cx0, cy0, self.values[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0])


def paste_legacy(prob: np.ndarray, box: np.ndarray, height: int, width: int) -> MaskRegion:
    """v0.6/1.x ``get_seg_masks`` before the threshold: ``box`` = network box / scale factor
    (float32, inclusive corners), probabilities resized to the truncated box with OpenCV."""
    import cv2

    b = np.asarray(box, np.float32).astype(np.int32)
    w = max(int(b[2]) - int(b[0]) + 1, 1)
    h = max(int(b[3]) - int(b[1]) + 1, 1)
    resized = cv2.resize(np.ascontiguousarray(prob, np.float32), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    return MaskRegion(int(b[0]), int(b[1]), resized).clipped(width, height)


def _sample_weights(coords: np.ndarray, size: int) -> np.ndarray:
    """``[n, size]`` bilinear weights of ``grid_sample`` (``align_corners=False``, zeros padding)
    at normalised ``coords`` in [-1, 1] (outside: partly or wholly zero)."""
    u = ((coords.astype(np.float32) + 1) * size - 1) / 2
    i0 = np.floor(u)
    frac = (u - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    out = np.zeros((len(coords), size), np.float32)
    rows = np.arange(len(coords))
    for idx, wt in ((i0, 1 - frac), (i0 + 1, frac)):
        ok = (idx >= 0) & (idx < size)
        out[rows[ok], idx[ok]] += wt[ok]
    return out


def paste_grid_sample(prob: np.ndarray, box: np.ndarray, height: int, width: int) -> MaskRegion:
    """MMDetection 2.x/3.x ``_do_paste_mask`` (CPU, ``skip_empty``) before the threshold for one
    box (float32, continuous, original pixels). ``grid_sample`` over a separable grid is
    ``Wy @ mask @ Wx.T``."""
    x0, y0, x1, y1 = (np.float32(v) for v in box)
    ix0 = max(int(np.floor(x0)) - 1, 0)
    iy0 = max(int(np.floor(y0)) - 1, 0)
    ix1 = min(int(np.ceil(x1)) + 1, width)
    iy1 = min(int(np.ceil(y1)) + 1, height)
    with np.errstate(divide="ignore", invalid="ignore"):
        gx = (np.arange(ix0, max(ix1, ix0), dtype=np.float32) + np.float32(0.5) - x0) / (x1 - x0)
        gy = (np.arange(iy0, max(iy1, iy0), dtype=np.float32) + np.float32(0.5) - y0) / (y1 - y0)
    gx, gy = gx * 2 - 1, gy * 2 - 1
    gx[~np.isfinite(gx)] = 0  # mmdet sets inf (zero-width boxes) to 0
    gy[~np.isfinite(gy)] = 0
    r = prob.shape[0]
    values = _sample_weights(gy, r) @ prob.astype(np.float32) @ _sample_weights(gx, r).T
    return MaskRegion(ix0, iy0, values)


def paste(proto: MaskProtocol, prob: np.ndarray, box: np.ndarray, height: int, width: int
          ) -> MaskRegion:
    """Probabilities of one detection pasted by the protocol's rule (not thresholded)."""
    fn = paste_legacy if proto.paste == "legacy" else paste_grid_sample
    return fn(prob, box, height, width)


def binarize(proto: MaskProtocol, region: MaskRegion) -> MaskRegion:
    """The official threshold: ``> thr`` (legacy) or ``>= thr`` (2.x/3.x)."""
    v = region.values
    keep = v > proto.threshold if proto.paste == "legacy" else v >= proto.threshold
    return MaskRegion(region.x0, region.y0, keep)


def average(regions: list[MaskRegion]) -> MaskRegion:
    """The mean of several probability regions (zero outside each) over their union."""
    if len(regions) == 1:
        return regions[0]
    boxes = np.array([r.box for r in regions])
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    acc = np.zeros((y1 - y0, x1 - x0), np.float32)
    for r in regions:
        h, w = r.values.shape
        acc[r.y0 - y0:r.y0 - y0 + h, r.x0 - x0:r.x0 - x0 + w] += r.values
    return MaskRegion(x0, y0, acc / np.float32(len(regions)))


def region_rle(region: MaskRegion, height: int, width: int) -> dict:
    """COCO RLE (compressed counts, as ``pycocotools.mask.encode`` of the full ``height x width``
    mask) of a boolean region, from its columns only."""
    from pycocotools import mask as mask_utils

    r = region.clipped(width, height)
    h, w = r.values.shape
    if h == 0 or w == 0 or not r.values.any():
        counts = [height * width]
    else:
        cols = np.zeros((w, height), np.uint8)  # the region's columns, full height, column-major
        cols[:, r.y0:r.y0 + h] = r.values.T
        flat = cols.reshape(-1)
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        if flat[0]:
            runs.insert(0, 0)  # RLE starts with a run of zeros
        runs[0] += r.x0 * height  # the columns left of the region
        trailing = (width - r.x0 - w) * height
        if len(runs) % 2:  # last run is zeros
            runs[-1] += trailing
        elif trailing:
            runs.append(trailing)
        counts = runs
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}

"""Face-detection planning: the image (and its tiles) letterboxed into the detector's input square.

Level 1 is MediaPipe's own pass: the whole image resized to fit the input square keeping its
aspect ratio, centred, the border black (pixel 0; the graph maps it to -1 as MediaPipe's zero
border does). Level ``k > 1`` adds square tiles of side ``t = max(W, H) / k`` (clipped to the
image where it is narrower), ``ceil((W - t) / (t / 2)) + 1`` along x (likewise y), evenly spread
so neighbours overlap by at least half a tile: every face smaller than about ``3 t / 8`` lies
inside some tile with a margin of ``t / 16`` (:data:`EDGE_MARGIN`), where the merge keeps it;
detections that reach into a tile's margin along an edge inside the image are cut faces and
are dropped there. Levels whose tiles would be smaller than half the input are skipped (the
network would only see upsampled pixels). All passes share one shape, so they run as batches.

Resampling: OpenCV's area filter when shrinking (antialiased: a group photo shrinks 5-10x),
bilinear when enlarging, on the uint8 image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from service.contract import IMAGE, FaceDetectionMetadata, FaceDetectionProtocol
from service.errors import Unprocessable
from service.tasks.common import Limits
from service.tasks.face_detection.schemas import FaceDetectOptions

#: Width of a tile's border band (a fraction of its side) in which detections count as cut.
EDGE_MARGIN = 1.0 / 16.0


@dataclass(frozen=True)
class FaceDetectionRequest:
    """A request's options with the model's defaults applied."""

    options: FaceDetectOptions
    score_threshold: float
    max_faces: int
    tiles: tuple[int, ...]


def resolve(options: FaceDetectOptions, extras: dict[str, Any], meta: FaceDetectionMetadata,
            limits: Limits) -> FaceDetectionRequest:
    """Options + the model's defaults; 422 ``too_many_faces`` above the faces limit."""
    proto = meta.face_detection
    thr = proto.score_threshold if options.score_threshold is None else options.score_threshold
    max_faces = limits.max_faces if options.max_faces is None else options.max_faces
    if max_faces > limits.max_faces:
        raise Unprocessable(f"max_faces {max_faces} is above the limit of {limits.max_faces} "
                            "faces per request", code="too_many_faces")
    tiles = tuple(options.tiles) if options.tiles is not None else tuple(sorted(set(proto.tiles)))
    return FaceDetectionRequest(options, float(thr), int(max_faces), tiles)


@dataclass(frozen=True)
class Tile:
    """One pass: the image region it shows and where that lands in the input square."""

    level: int
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels
    resized: tuple[int, int]  # (h, w) of the region inside the input square
    offset: tuple[int, int]  # (x, y) of the resized region in the input square
    cut_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom edges inside the image

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Input pixels per image pixel along x and y."""
        x0, y0, x1, y1 = self.region
        return self.resized[1] / (x1 - x0), self.resized[0] / (y1 - y0)

    def to_image(self, xy: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
        """Input-relative ``[..., 2]`` points (MediaPipe's 0..1 frame of the input square)
        -> image pixels (the continuous frame: the top-left pixel covers [0,1]^2)."""
        sx, sy = self.scale_xy
        out = np.empty_like(xy, dtype=np.float64)
        out[..., 0] = (xy[..., 0] * input_size[1] - self.offset[0]) / sx + self.region[0]
        out[..., 1] = (xy[..., 1] * input_size[0] - self.offset[1]) / sy + self.region[1]
        return out


def _starts(length: int, side: float) -> list[float]:
    """Evenly spread starts of windows of ``side`` covering ``[0, length]``, stride <= side / 2."""
    if length <= side:
        return [0.0]
    n = math.ceil((length - side) / (side / 2)) + 1
    return [(length - side) * i / (n - 1) for i in range(n)]


def _letterbox(region: tuple[int, int, int, int], input_size: tuple[int, int]
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    ih, iw = input_size
    s = min(ih / h, iw / w)
    nh, nw = max(1, min(ih, round(h * s))), max(1, min(iw, round(w * s)))
    return (nh, nw), ((iw - nw) // 2, (ih - nh) // 2)


def tiles(width: int, height: int, levels: tuple[int, ...], input_size: tuple[int, int]
          ) -> list[Tile]:
    """The passes of ``levels`` over a ``width x height`` image (level 1 first)."""
    out: list[Tile] = []
    long_side = max(width, height)
    for k in sorted(set(levels)):
        side = long_side / k
        if k > 1 and side < min(input_size) / 2:
            continue
        for y in _starts(height, side):
            for x in _starts(width, side):
                x0, y0 = int(round(x)), int(round(y))
                x1, y1 = min(width, int(round(x + side))), min(height, int(round(y + side)))
                if k == 1:
                    x0, y0, x1, y1 = 0, 0, width, height
                region = (x0, y0, x1, y1)
                resized, offset = _letterbox(region, input_size)
                cut = (x0 > 0, y0 > 0, x1 < width, y1 < height)
                out.append(Tile(k, region, resized, offset, cut))
    return out


@dataclass(frozen=True)
class FaceDetectionPlan:
    """The tiles of one image and how the merge decodes and filters their outputs."""

    image_size: tuple[int, int]  # (h, w)
    tiles: list[Tile]
    input_size: tuple[int, int]
    score_threshold: float
    max_faces: int
    protocol: FaceDetectionProtocol  # anchors, decoding and NMS of the model

    reduce_hint: ClassVar[str] = "use fewer tiling levels"

    @property
    def n_passes(self) -> int:
        return len(self.tiles)

    @property
    def n_pixels(self) -> int:
        return self.n_passes * self.input_size[0] * self.input_size[1]

    def passes(self, image: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Each tile letterboxed into the input square: ``3 x h x w`` float32 pixels."""
        ih, iw = self.input_size
        out = []
        for t in self.tiles:
            x0, y0, x1, y1 = t.region
            nh, nw = t.resized
            region = image[y0:y1, x0:x1]
            shrink = nw < (x1 - x0) or nh < (y1 - y0)
            small = cv2.resize(np.ascontiguousarray(region), (nw, nh),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            chw = np.zeros((3, ih, iw), np.float32)
            ox, oy = t.offset
            chw[:, oy:oy + nh, ox:ox + nw] = small.transpose(2, 0, 1)
            out.append({IMAGE: chw})
        return out


def plan(req: FaceDetectionRequest, meta: FaceDetectionMetadata, image_size: tuple[int, int]
         ) -> FaceDetectionPlan:
    """The tiles of an image of ``image_size = (h, w)``."""
    proto = meta.face_detection
    h, w = image_size
    size = (int(proto.input_size[0]), int(proto.input_size[1]))
    return FaceDetectionPlan((h, w), tiles(w, h, req.tiles, size), size, req.score_threshold,
                             req.max_faces, proto)

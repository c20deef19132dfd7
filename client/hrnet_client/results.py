"""Typed answers of the gateway's task endpoints (dataclasses over the JSON; ``raw`` keeps it)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hrnet_client.images import decode_png


def _image(block: Optional[dict]) -> Optional[bytes]:
    """The file bytes of an encoded image block ``{"format", "data"}`` (None when absent)."""
    return base64.b64decode(block["data"]) if block else None


@dataclass(frozen=True)
class ModelUsed:
    """The model that answered."""

    name: str
    arch: str
    dataset: str
    random_init: bool
    weights_origin: str
    precision: str = "fp32"
    """The arithmetic that ran: 'fp32' (exact), or a tier ('bf16', 'int8', 'fp16')."""
    engine: str = "onnxruntime"

    @classmethod
    def of(cls, d: dict) -> "ModelUsed":
        return cls(d["name"], d["arch"], d["dataset"], bool(d["random_init"]), d["weights_origin"],
                   d.get("precision", "fp32"), d.get("engine", "onnxruntime"))


@dataclass(frozen=True)
class _Answer:
    model: ModelUsed
    random_init: bool
    image_size: tuple[int, int]
    """``(width, height)`` of the decoded image."""
    options: dict
    timings_ms: dict
    raw: dict = field(repr=False)
    """The decoded JSON answer."""


@dataclass(frozen=True)
class SegmentClass:
    """One class present in the label map."""

    id: int
    name: str
    pixels: int
    fraction: float
    label_id: Optional[int] = None
    rle: Optional[dict] = None
    polygons: Optional[list] = None


@dataclass(frozen=True)
class Segmentation(_Answer):
    """``POST /segment``: classes present and the requested maps."""

    labels: list = field(default_factory=list)
    classes: list = field(default_factory=list)

    @property
    def label_map(self) -> Optional[np.ndarray]:
        """``H x W`` class indices (``labels[i]`` names class ``i``), decoded from the PNG."""
        data = _image(self.raw.get("label_map"))
        return None if data is None else decode_png(data)

    @property
    def confidence(self) -> Optional[np.ndarray]:
        """``H x W`` float32 in 0..1 (max score / sum of scores), if requested."""
        data = _image(self.raw.get("confidence"))
        return None if data is None else decode_png(data).astype(np.float32) / 255.0

    @property
    def label_ids(self) -> Optional[np.ndarray]:
        """``H x W`` dataset label ids (Cityscapes), if requested."""
        data = _image(self.raw.get("label_ids"))
        return None if data is None else decode_png(data)

    @property
    def overlay(self) -> Optional[bytes]:
        """The overlay file (JPEG or PNG bytes), if requested."""
        return _image(self.raw.get("overlay"))

    @classmethod
    def of(cls, d: dict) -> "Segmentation":
        classes = [SegmentClass(c["id"], c["name"], c["pixels"], c["fraction"], c.get("label_id"),
                                c.get("rle"), c.get("polygons")) for c in d["classes"]]
        return cls(**_head(d), labels=list(d["labels"]), classes=classes)


@dataclass(frozen=True)
class Face:
    """The landmarks of one face."""

    index: int
    box: Optional[list]
    center: list
    scale: float
    crop_box: list
    landmarks: np.ndarray
    """``K x 2`` ``(x, y)`` in image pixels (the top-left pixel covers [0,1] x [0,1])."""
    confidence: np.ndarray
    """Heatmap peak per landmark: not a probability (trained models give ~1 when sure)."""
    scores: np.ndarray
    """``confidence`` clipped to [0, 1]."""
    score: float
    keypoints: Optional[list] = None
    """COCO triplets ``[x1, y1, s1, ...]`` when asked for (``coco_keypoints=True``)."""


@dataclass(frozen=True)
class Landmarks(_Answer):
    """``POST /landmarks``: per face its points."""

    labels: list = field(default_factory=list)
    faces: list = field(default_factory=list)

    @property
    def overlay(self) -> Optional[bytes]:
        return _image(self.raw.get("overlay"))

    @classmethod
    def of(cls, d: dict) -> "Landmarks":
        faces = [Face(f["index"], f["box"], f["center"], f["scale"], f["crop_box"],
                      np.asarray(f["landmarks"], np.float64).reshape(-1, 2),
                      np.asarray(f["confidence"], np.float64),
                      np.asarray(f.get("scores", np.clip(f["confidence"], 0, 1)), np.float64),
                      float(f.get("score", 0.0)), f.get("keypoints")) for f in d["faces"]]
        return cls(**_head(d), labels=list(d["labels"]), faces=faces)


@dataclass(frozen=True)
class Detection:
    """One detected object."""

    label: str
    label_index: int
    category_id: Optional[int]
    score: float
    box: tuple
    """``(x1, y1, x2, y2)`` in image pixels."""
    bbox: tuple
    """COCO ``(x, y, width, height)``."""
    mask: Optional[dict] = None
    """With ``masks=True`` (Mask R-CNN models): ``{"rle": {size, counts}, "area": pixels,
    "polygons": ...}``; ``pycocotools.mask.decode(rle)`` gives the image-size mask."""


@dataclass(frozen=True)
class Detections(_Answer):
    """``POST /detect``: the detections, best first."""

    detections: list = field(default_factory=list)
    coco_results: Optional[list] = None

    @property
    def boxes(self) -> np.ndarray:
        """``N x 4`` ``x1, y1, x2, y2``."""
        return np.asarray([d.box for d in self.detections], np.float64).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.asarray([d.score for d in self.detections], np.float64)

    @property
    def labels(self) -> list:
        return [d.label for d in self.detections]

    @property
    def overlay(self) -> Optional[bytes]:
        return _image(self.raw.get("overlay"))

    @classmethod
    def of(cls, d: dict) -> "Detections":
        dets = [Detection(x["label"], x["label_index"], x.get("category_id"), x["score"],
                          tuple(x["box"]), tuple(x.get("bbox") or _xywh(x["box"])), x.get("mask"))
                for x in d["detections"]]
        return cls(**_head(d), detections=dets, coco_results=d.get("coco_results"))


def _xywh(box: list) -> list:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _head(d: dict) -> dict[str, Any]:
    return {"model": ModelUsed.of(d["model"]), "random_init": bool(d["random_init"]),
            "image_size": (int(d["image_size"][0]), int(d["image_size"][1])),
            "options": d.get("options", {}), "timings_ms": d.get("timings_ms", {}), "raw": d}

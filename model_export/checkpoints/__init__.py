"""Checkpoint files: say what a file is, and load it strictly into a network of its family.

Families: HRNetV2 segmentation / landmark networks (:mod:`.hrnet`: ``official-seg``,
``official-face``, ``mmseg``, ``mmpose``) and HRNetV2p Faster R-CNN (:mod:`.detection`:
``hrnet-det``, ``mmdet-v1``, ``mmdet-v2``). :mod:`.reading` reads files without running code from
them; :mod:`.matching` is the strict matcher both families use; :mod:`.backbone` recognises the
backbone from tensor shapes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from model_export.checkpoints.detection import convert_detection_state_dict, inspect_detection
from model_export.checkpoints.hrnet import convert_state_dict, inspect_hrnet
from model_export.checkpoints.matching import CheckpointError, CheckpointInfo, LoadReport
from model_export.checkpoints.reading import file_sha256, read_checkpoint
from model_export.nets.detection import HRNetFasterRCNN


def detect_format(obj: Any) -> CheckpointInfo:
    """Recognise a loaded checkpoint: format, task, arch (from tensor shapes) and output count."""
    info = inspect_hrnet(obj)
    if info.task == "detection":
        try:
            return inspect_detection(obj)
        except CheckpointError:
            return info  # detection-like keys but no two-stage layout: say what we can
    return info


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read ``path`` and say what it is (format, task, arch, outputs, sha256)."""
    info = detect_format(read_checkpoint(path))
    return replace(info, path=str(path), sha256=file_sha256(path))


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Read ``path``, convert it strictly for ``model``'s family and load it into ``model``.

    Raises :class:`~model_export.checkpoints.matching.CheckpointError` when the file does not fit;
    the report carries the file's path and sha256.
    """
    obj = read_checkpoint(path)
    if isinstance(model, HRNetFasterRCNN):
        state_dict, report = convert_detection_state_dict(obj, model)
    else:
        state_dict, report = convert_state_dict(obj, model)
    model.load_state_dict(state_dict, strict=True)
    report.info = replace(report.info, path=str(path), sha256=file_sha256(path))
    return report

"""One exporter per task, found by task name in :data:`EXPORTERS`, and the per-task options of
``ExportRequest.options`` (:class:`SegmentationExport`, :class:`LandmarkExport`,
:class:`DetectionExport`, :class:`FaceDetectionExport`)."""

from __future__ import annotations

from typing import Any

from model_export.errors import ExportError
from model_export.exporters.base import Exporter
from model_export.exporters.detection import DetectionExport, DetectionExporter
from model_export.exporters.face_detection import FaceDetectionExport, FaceDetectionExporter
from model_export.exporters.landmarks import LandmarkExport, LandmarkExporter
from model_export.exporters.segmentation import SegmentationExport, SegmentationExporter

__all__ = [
    "EXPORTERS",
    "DetectionExport",
    "ExportOptions",
    "FaceDetectionExport",
    "LandmarkExport",
    "SegmentationExport",
    "exporter_for",
]

#: What ``ExportRequest.options`` may hold (the class of the request's task).
ExportOptions = SegmentationExport | LandmarkExport | DetectionExport | FaceDetectionExport

#: The exporter of each task.
EXPORTERS: dict[str, Exporter[Any, Any]] = {
    e.task: e for e in (SegmentationExporter(), LandmarkExporter(), DetectionExporter(),
                        FaceDetectionExporter())
}


def exporter_for(task: str) -> Exporter[Any, Any]:
    """The exporter of ``task``; ExportError naming the exported tasks otherwise."""
    try:
        return EXPORTERS[task]
    except KeyError:
        raise ExportError(f"no exporter for task {task!r}; tasks: {', '.join(EXPORTERS)}") from None

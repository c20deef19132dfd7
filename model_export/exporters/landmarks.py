"""Facial-landmark export: HRNetV2 + the official face head, graph ``image`` (256x256 face crops)
-> ``heatmaps`` (64x64) with a dynamic batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model_export.datasets import LANDMARK_INPUT_SIZE
from model_export.exporters.hrnet import HRNetExporter
from model_export.onnx.hrnet import DEFAULT_PARITY_BATCHES, ParityThresholds


@dataclass(frozen=True, kw_only=True)
class LandmarkExport:
    """Options of a landmark export.

    ``align_corners``: the bilinear convention (default: by checkpoint origin). The input size is
    fixed, so the graph is traced and checked at 256x256, on a different photo per case;
    ``parity_batches`` are the checked batch sizes, passing by ``thresholds``.
    """

    align_corners: bool | None = None
    max_batch_size: int = 8
    parity_batches: tuple[int, ...] = DEFAULT_PARITY_BATCHES
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)


class LandmarkExporter(HRNetExporter[LandmarkExport]):
    """Exports HRNetV2 facial-landmark networks."""

    task = "landmarks"
    options_type = LandmarkExport

    def protocol_overrides(self, options: LandmarkExport) -> dict[str, Any]:
        """None: the landmark protocol is the dataset's."""
        return {}

    def trace_size(self, options: LandmarkExport) -> tuple[int, int]:
        """The fixed face crop."""
        return LANDMARK_INPUT_SIZE

    def parity_sizes(self, options: LandmarkExport) -> list[tuple[int, int]]:
        """The fixed face crop."""
        return [LANDMARK_INPUT_SIZE]

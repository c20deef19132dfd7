"""Segmentation export: HRNetV2 + the official 1x1 head, graph ``image`` -> ``logits`` with
dynamic batch, height and width."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from model_export.exporters.hrnet import HRNetExporter
from model_export.onnx.hrnet import (
    DEFAULT_PARITY_BATCHES,
    DEFAULT_SEG_PARITY_SIZES,
    DEFAULT_TRACE_SIZE,
    ParityThresholds,
)


@dataclass(frozen=True, kw_only=True)
class SegmentationExport:
    """Options of a segmentation export.

    ``base_size`` / ``crop_size``: the test protocol recorded for the gateway (default: the
    dataset's official values; a difference is noted in the metadata). ``align_corners``: the
    bilinear convention (default: by checkpoint origin). ``trace_size``: (h, w) of the tracing
    input; ``parity_sizes`` (which must include another size) and ``parity_batches``: the parity
    cases, passing by ``thresholds``.
    """

    base_size: int | None = None
    crop_size: tuple[int, int] | None = None
    align_corners: bool | None = None
    max_batch_size: int = 8
    trace_size: tuple[int, int] = DEFAULT_TRACE_SIZE
    parity_sizes: Sequence[tuple[int, int]] = DEFAULT_SEG_PARITY_SIZES
    parity_batches: tuple[int, ...] = DEFAULT_PARITY_BATCHES
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)


class SegmentationExporter(HRNetExporter[SegmentationExport]):
    """Exports HRNetV2 segmentation networks."""

    task = "segmentation"
    options_type = SegmentationExport

    def protocol_overrides(self, options: SegmentationExport) -> dict[str, Any]:
        """The base and crop size overrides."""
        return {"base_size": options.base_size, "crop_size": options.crop_size}

    def trace_size(self, options: SegmentationExport) -> tuple[int, int]:
        """``options.trace_size``."""
        return options.trace_size

    def parity_sizes(self, options: SegmentationExport) -> list[tuple[int, int]]:
        """``options.parity_sizes``."""
        return list(options.parity_sizes)

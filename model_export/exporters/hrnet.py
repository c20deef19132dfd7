"""The export steps segmentation and landmarks share: an HRNetV2 with a 1x1 head, exported with
in-graph normalisation (pixels in) and checked against PyTorch on real photos at each batch size."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import nn

from model_export.archs import build_model
from model_export.errors import ExportError
from model_export.exporters.base import (
    RANDOM_INIT_WEIGHTS,
    BuildJob,
    Built,
    Exporter,
    load_weights,
)
from model_export.metadata import default_align_corners
from model_export.onnx.hrnet import (
    ParityReport,
    ParityThresholds,
    check_parity,
    export_onnx,
    require_parity,
)
from model_export.progress import Log, stage
from model_export.random_init import randomize_for_demo


class HRNetOptions(Protocol):
    """The options segmentation and landmarks both have."""

    @property
    def align_corners(self) -> bool | None:
        """Bilinear convention; None: by checkpoint origin."""
        ...

    @property
    def max_batch_size(self) -> int:
        """Triton's ``max_batch_size``."""
        ...

    @property
    def parity_batches(self) -> tuple[int, ...]:
        """Batch sizes of the parity check."""
        ...

    @property
    def thresholds(self) -> ParityThresholds:
        """Pass criteria of the parity check."""
        ...


HRNetOptionsT = TypeVar("HRNetOptionsT", bound=HRNetOptions)


class HRNetExporter(Exporter[HRNetOptionsT, ParityReport]):
    """Segmentation / landmarks: a subclass names the task, its options and protocol overrides,
    and the (trace, parity) input sizes."""

    @abstractmethod
    def protocol_overrides(self, options: HRNetOptionsT) -> dict[str, Any]:
        """``build_metadata`` keyword arguments of the task's protocol."""

    @abstractmethod
    def trace_size(self, options: HRNetOptionsT) -> tuple[int, int]:
        """(h, w) of the tracing input."""

    @abstractmethod
    def parity_sizes(self, options: HRNetOptionsT) -> list[tuple[int, int]]:
        """(h, w) of the parity cases."""

    def validate(self, options: HRNetOptionsT, *, opset: int, tensorrt_plan: bool) -> None:
        """The batch size must allow one image."""
        if options.max_batch_size < 1:
            raise ExportError("max batch size must be >= 1")

    def build(self, job: BuildJob, options: HRNetOptionsT, log: Log) -> Built:
        """The network (normalised input) with loaded or demo-random weights."""
        if options.align_corners is not None:
            align_corners = options.align_corners
        elif job.info is not None:
            align_corners = job.info.align_corners
        else:
            align_corners = default_align_corners("random-init")
        fuse_upsample = job.info.fuse_upsample if job.info is not None else "bilinear"
        n = job.dataset.num_outputs
        with stage(log, f"building {self.task} {job.arch} ({n} outputs, "
                        f"align_corners={align_corners})"):
            model = build_model(self.task, job.arch, n, align_corners=align_corners,
                                fuse_upsample=fuse_upsample)
        notes: list[str] = []
        if job.checkpoint is not None:
            weights = load_weights(model, job, log)
        else:
            with stage(log, f"random init (seed {job.seed}, BN statistics from sample photos)"):
                randomize_for_demo(model, job.seed)
            weights = RANDOM_INIT_WEIGHTS
            notes.append(f"Random-init seed {job.seed} "
                         "(model_export.random_init.randomize_for_demo).")
        return Built(model=model, weights=weights, align_corners=align_corners,
                     max_batch_size=options.max_batch_size, notes=notes,
                     protocol_overrides=self.protocol_overrides(options))

    def export(self, model: nn.Module, onnx_path: Path, options: HRNetOptionsT, *, opset: int,
               log: Log) -> ParityReport:
        """Trace with pixel input, then compare ONNX Runtime with PyTorch."""
        trace_size = self.trace_size(options)
        with stage(log, f"exporting ONNX (opset {opset})"):
            export_onnx(model, onnx_path, task=self.task, opset=opset, trace_size=trace_size)
        with stage(log, "parity: ONNX Runtime vs PyTorch on sample photos"):
            return check_parity(model, onnx_path, task=self.task,
                                sizes=self.parity_sizes(options),
                                batches=options.parity_batches, trace_size=trace_size,
                                thresholds=options.thresholds)

    def require_parity(self, report: ParityReport) -> None:
        """ParityError unless every (size, batch) case passed."""
        require_parity(report)

    def tier_sizes(self, options: HRNetOptionsT) -> list[tuple[int, int]]:
        """The parity sizes."""
        return self.parity_sizes(options)

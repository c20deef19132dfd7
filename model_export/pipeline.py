"""The export pipeline: checkpoint -> network -> ONNX -> parity -> repository entry (-> TensorRT plan).

``export_model(ExportRequest(...))`` is what the CLI's ``export`` and ``demo`` commands run; tests
and other code call it directly, for every task (segmentation, landmarks, detection). Progress goes
to stderr as stage lines with timings.

Tasks differ only in how the network is built and loaded and in the ONNX export + parity step
(:func:`_build_detection` / :func:`_export_detection` for HRNetV2p Faster R-CNN, whose graph takes
``image`` + ``image_size`` and serves one image per call); checkpoint inspection, the random-init
banner, metadata, versions, Triton options, the repository entry and the summary are shared.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from service.contract import DetectionProtocol, ExportInfo, ModelMetadata, WeightsInfo

from model_export.datasets import DatasetInfo, get_dataset
from model_export.metadata import build_metadata, default_align_corners, detection_protocol
from model_export.errors import ExportError
from model_export.random_init import DEMO_SEED
from model_export.onnx.hrnet import (
    DEFAULT_OPSET,
    DEFAULT_PARITY_BATCHES,
    DEFAULT_SEG_PARITY_SIZES,
    DEFAULT_TRACE_SIZE,
    MAX_OPSET,
    ParityReport,
    ParityThresholds,
    check_parity,
    export_onnx,
    require_parity,
)
from model_export.repository import EntryPaths, TritonOptions, write_entry, write_parity

Log = Callable[[str], None]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def stderr_log(message: str) -> None:
    """Default progress sink."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def stage(log: Log, title: str) -> Iterator[None]:
    """Log ``title``, run the block, log its duration."""
    log(f"[model_export] {title} ...")
    t0 = time.perf_counter()
    yield
    log(f"[model_export] {title}: done in {time.perf_counter() - t0:.1f}s")


@dataclass
class ExportRequest:
    """One model to export. Exactly one of ``checkpoint`` / ``random_init`` must be given.

    Detection (``task="detection"``, dataset ``coco``): ``arch`` is e.g. ``hrnetv2p_w18``;
    ``max_size`` is the (long, short) resize limit recorded in the metadata (default the
    official 1333x800); ``detection_overrides`` go to ``detection_config`` (e.g. a smaller
    ``rpn_post_nms_top_n`` for CPU demos; recorded in the notes); ``trace_size`` and
    ``parity_sizes`` are resize limits of the tracing and parity photos; the graph serves one
    image per call, so ``max_batch_size`` and ``parity_batches`` do not apply.
    """

    task: str
    arch: str | None
    dataset: str
    name: str
    repo: Path
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int | None = None
    align_corners: bool | None = None
    base_size: int | None = None
    crop_size: tuple[int, int] | None = None
    max_batch_size: int = 8
    instance_kind: Literal["gpu", "cpu"] = "gpu"
    instance_count: int = 1
    tensorrt_accelerator: Literal["fp16"] | None = None
    tensorrt_plan: bool = False
    opset: int = DEFAULT_OPSET
    trace_size: tuple[int, int] | None = None
    parity_sizes: list[tuple[int, int]] | None = None
    parity_batches: tuple[int, ...] = DEFAULT_PARITY_BATCHES
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    warmup: Literal["zero", "random", "none"] = "zero"
    max_queue_delay_microseconds: int = 2000
    notes: list[str] = field(default_factory=list)
    overwrite: bool = True
    max_size: tuple[int, int] | None = None
    detection_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote, plus the exact torch network it exported."""

    request: ExportRequest
    metadata: ModelMetadata
    entry: EntryPaths
    parity: Any  # ParityReport, or DetectionParityReport for detection
    # torch.nn.Module in eval mode: normalised input (segmentation, landmarks), or pixels and
    # image_size (detection, HRNetFasterRCNN).
    model: object = field(repr=False)
    plan_entry: EntryPaths | None = None
    plan_message: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """The closing lines of the CLI."""
        m = self.metadata
        lines = [
            f"{m.name}: {m.task} {m.arch} on {m.dataset} "
            f"({'RANDOM-INIT' if m.weights.random_init else m.weights.format + ' weights'}), "
            f"align_corners={m.align_corners}, max batch {m.max_batch_size}",
            f"  {self.entry.model_file}",
            f"  {self.entry.config}",
            f"  {self.entry.metadata}",
        ]
        if self.entry.parity:
            lines.append(f"  {self.entry.parity} ({self.parity.headline()}, passed)")
        if self.plan_entry:
            lines.append(f"  {self.plan_entry.model_file}")
        elif self.plan_message:
            lines.append(f"  TensorRT plan not written: {self.plan_message}")
        return "\n".join(lines)


def _versions(opset: int, fp16: bool) -> ExportInfo:
    import onnx
    import torch

    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except Exception:  # the export machine may lack it; parity would then fail anyway
        ort_version = None
    try:
        from importlib.metadata import version

        own = version("hrnet-serve")
    except Exception:
        own = "0.1.0"
    return ExportInfo(
        model_export_version=own,
        torch=torch.__version__,
        onnx=onnx.__version__,
        onnxruntime=ort_version,
        opset=opset,
        exported_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        fp16_tensorrt_accelerator=fp16,
    )


RANDOM_INIT_BANNER = (
    "!" * 78 + "\n"
    "!!! RANDOM-INIT WEIGHTS: '{name}' is NOT a trained model; its outputs are meaningless.\n"
    "!!! Recorded in its metadata (weights.random_init=true, origin 'random-init').\n" + "!" * 78
)


def _validate(req: ExportRequest) -> None:
    if not _NAME_RE.match(req.name):
        raise ExportError(f"model name {req.name!r} must match {_NAME_RE.pattern}")
    if (req.checkpoint is None) == (not req.random_init):
        raise ExportError("give exactly one of --checkpoint PATH or --random-init")
    ds = get_dataset(req.dataset)
    if ds.task != req.task:
        raise ExportError(f"dataset {ds.name!r} is a {ds.task} dataset, not {req.task}")
    if req.checkpoint is not None and not Path(req.checkpoint).is_file():
        raise ExportError(f"checkpoint not found: {req.checkpoint}")
    if not 13 <= req.opset <= MAX_OPSET:
        raise ExportError(f"opset {req.opset} not supported by the exporter (13..{MAX_OPSET})")
    if req.max_batch_size < 1:
        raise ExportError("max batch size must be >= 1")
    if req.tensorrt_accelerator and req.instance_kind != "gpu":
        raise ExportError("--tensorrt-accelerator needs --instance-kind gpu")
    if req.task == "detection":
        from model_export.onnx.detection import MIN_DETECTION_OPSET

        if req.opset < MIN_DETECTION_OPSET:
            raise ExportError(f"detection export needs opset >= {MIN_DETECTION_OPSET}")
        if req.base_size is not None or req.crop_size is not None:
            raise ExportError("--base-size/--crop-size are segmentation options; detection "
                              "takes --max-size LONG SHORT")
        if req.tensorrt_plan:
            raise ExportError("TensorRT plans are not built for detection (NMS and RoIAlign give "
                              "data-dependent shapes); use --tensorrt-accelerator fp16 instead")
    elif req.max_size is not None or req.detection_overrides:
        raise ExportError("--max-size and RPN settings apply to detection only")


def export_model(req: ExportRequest, log: Log = stderr_log) -> ExportResult:
    """Run the whole export of ``req``; raises ExportError, CheckpointError or ParityError."""
    import torch

    t_start = time.perf_counter()
    _validate(req)
    ds = get_dataset(req.dataset)
    repo = Path(req.repo)
    arch = req.arch
    if req.checkpoint is not None:
        from model_export.checkpoints import inspect_checkpoint

        with stage(log, f"inspecting {req.checkpoint}"):
            info = inspect_checkpoint(req.checkpoint)
        log(info.summary())
        if info.task != req.task:
            raise ExportError(f"{req.checkpoint} is a {info.task} checkpoint ({info.format}), not {req.task}")
        if arch is None:
            arch = info.arch
        elif info.arch is not None and info.arch != arch:
            raise ExportError(f"--arch {arch} but {req.checkpoint} holds {info.arch}")
        if info.num_outputs is not None and info.num_outputs != ds.num_outputs:
            raise ExportError(
                f"{req.checkpoint} has {info.num_outputs} outputs but dataset {ds.name} has "
                f"{ds.num_outputs}; pick the matching --dataset"
            )
        align_corners = info.align_corners if req.align_corners is None else req.align_corners
    else:
        info = None
        align_corners = default_align_corners("random-init") if req.align_corners is None else req.align_corners
        # Always to stderr, whatever the progress sink: random weights must never pass silently.
        print(RANDOM_INIT_BANNER.format(name=req.name), file=sys.stderr, flush=True)
    if arch is None:
        raise ExportError("--arch is required (the checkpoint does not reveal it)")
    seed = DEMO_SEED if req.seed is None else req.seed

    notes = list(req.notes)
    detection: DetectionProtocol | None = None
    if req.task == "detection":
        model, weights, extra, detection = _build_detection(req, arch, ds, info, seed, log)
        align_corners = False  # HRFPN upsamples with align_corners=False, as the official code
        notes += extra
    else:
        model, weights = _build_hrnet(req, arch, ds, info, align_corners, seed, log)
        if req.random_init:
            notes.append(f"Random-init seed {seed} (model_export.random_init.randomize_for_demo).")
    model.eval()

    fp16 = req.tensorrt_accelerator == "fp16"
    metadata = build_metadata(
        name=req.name,
        task=req.task,
        arch=arch,
        dataset=ds,
        weights=weights,
        export=_versions(req.opset, fp16),
        max_batch_size=req.max_batch_size,
        align_corners=align_corners,
        base_size=req.base_size,
        crop_size=req.crop_size,
        detection=detection,
        notes=notes,
    )

    staging = Path(tempfile.mkdtemp(prefix=f"model_export_{req.name}_"))
    onnx_path = staging / "model.onnx"
    with torch.no_grad():
        if req.task == "detection":
            parity: Any = _export_detection(req, model, onnx_path, log)
        else:
            parity = _export_hrnet(req, model, onnx_path, log)
    log(parity.summary())
    write_parity(staging, parity.to_dict())
    try:
        if req.task == "detection":
            from model_export.onnx.detection import require_detection_parity

            require_detection_parity(parity)
        else:
            require_parity(parity)
    except Exception as exc:
        raise type(exc)(f"{exc}\nThe failed export is kept in {staging} for inspection.") from None

    options = TritonOptions(
        instance_kind=req.instance_kind,
        instance_count=req.instance_count,
        max_queue_delay_microseconds=req.max_queue_delay_microseconds,
        warmup=req.warmup,
        tensorrt_fp16=fp16,
    )
    with stage(log, f"writing {repo / req.name}"):
        entry = write_entry(repo, metadata, onnx_path, parity=parity.to_dict(), options=options,
                            move=True, overwrite=req.overwrite)
    result = ExportResult(request=req, metadata=metadata, entry=entry, parity=parity, model=model)
    if req.tensorrt_plan:
        _write_plan(result, options, log)
    shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - t_start
    return result


# --------------------------------------------------------------------------------------------
# Segmentation and landmarks: HRNetV2 with a 1x1 head, wrapped to take pixels


def _build_hrnet(req: ExportRequest, arch: str, ds: DatasetInfo, info: Any, align_corners: bool,
                 seed: int, log: Log) -> tuple[Any, WeightsInfo]:
    """The network (normalised input) with loaded or demo-random weights, and its WeightsInfo."""
    from model_export.archs import build_model

    fuse_upsample = info.fuse_upsample if info is not None else "bilinear"
    with stage(log, f"building {req.task} {arch} ({ds.num_outputs} outputs, align_corners={align_corners})"):
        model = build_model(req.task, arch, ds.num_outputs, align_corners=align_corners,
                            fuse_upsample=fuse_upsample)
    if info is not None:
        from model_export.checkpoints import load_checkpoint

        with stage(log, "loading weights"):
            report = load_checkpoint(model, req.checkpoint)  # type: ignore[arg-type]
        log(report.summary())
        return model, WeightsInfo(
            random_init=False,
            origin=info.origin,
            format=info.format,
            file=Path(req.checkpoint).name,  # type: ignore[arg-type]
            sha256=report.info.sha256,
        )
    from model_export.random_init import randomize_for_demo

    with stage(log, f"random init (seed {seed}, BN statistics from sample photos)"):
        randomize_for_demo(model, seed)
    return model, WeightsInfo(random_init=True, origin="random-init", format="random-init")


def _export_hrnet(req: ExportRequest, model: Any, onnx_path: Path, log: Log) -> ParityReport:
    trace_size = req.trace_size or DEFAULT_TRACE_SIZE
    with stage(log, f"exporting ONNX (opset {req.opset})"):
        export_onnx(model, onnx_path, task=req.task, opset=req.opset, trace_size=trace_size)
    sizes = req.parity_sizes or list(DEFAULT_SEG_PARITY_SIZES)
    with stage(log, "parity: ONNX Runtime vs PyTorch on sample photos"):
        return check_parity(model, onnx_path, task=req.task, sizes=sizes, batches=req.parity_batches,
                            trace_size=trace_size, thresholds=req.thresholds)


# --------------------------------------------------------------------------------------------
# Detection: HRNetV2p Faster R-CNN, pixels + image_size in, post-processed boxes out


def _build_detection(req: ExportRequest, arch: str, ds: DatasetInfo, info: Any, seed: int,
                     log: Log) -> tuple[Any, WeightsInfo, list[str], DetectionProtocol]:
    """The detector with loaded or demo-random weights, its WeightsInfo, notes and protocol."""
    import torch

    from model_export.archs import build_model
    from model_export.checkpoints import load_checkpoint
    from model_export.checkpoints.detection import FORMAT_CONVENTION

    overrides = dict(req.detection_overrides)
    if info is not None:
        if info.format not in FORMAT_CONVENTION:
            raise ExportError(f"{req.checkpoint} looks like a detection checkpoint ({info.format}) "
                              "but not an HRNetV2p Faster/Mask R-CNN that can be loaded")
        convention = FORMAT_CONVENTION[info.format]
    else:
        convention = "legacy"
    title = (f"building detection {arch} (HRNetV2p Faster R-CNN, {ds.num_outputs} classes with "
             f"background, {convention} box arithmetic)")
    with stage(log, title):
        torch.manual_seed(seed)
        try:
            model = build_model("detection", arch, ds.num_outputs, convention=convention,
                                **overrides)
        except TypeError as exc:  # an unknown DetectionConfig field
            raise ExportError(f"bad detection setting in {sorted(overrides)}: {exc}") from None
    notes: list[str] = []
    if info is not None:
        with stage(log, "loading weights"):
            report = load_checkpoint(model, req.checkpoint)  # type: ignore[arg-type]
        log(report.summary())
        weights = WeightsInfo(random_init=False, origin=info.origin, format=info.format,
                              file=Path(req.checkpoint).name,  # type: ignore[arg-type]
                              sha256=report.info.sha256)
    else:
        from model_export.random_init import make_demo_detector

        with stage(log, f"random init (seed {seed}, class logits widened)"):
            make_demo_detector(model, seed=seed)
        weights = WeightsInfo(random_init=True, origin="random-init", format="random-init")
        notes.append(f"Random-init seed {seed}; class logits widened so that some boxes pass the "
                     "score threshold (model_export.random_init.make_demo_detector).")
    if overrides:
        notes.append(f"Test settings differ from the official ones: {overrides}.")
    cfg = model.cfg
    protocol = detection_protocol(
        ds, max_size=req.max_size, score_threshold=cfg.score_thresh, nms_iou=cfg.nms_thresh,
        max_detections=cfg.detections_per_img,
        box_convention="legacy_plus_one" if cfg.convention == "legacy" else "continuous")
    return model, weights, notes, protocol


def _export_detection(req: ExportRequest, model: Any, onnx_path: Path, log: Log) -> Any:
    from model_export.onnx.detection import (
        PARITY_SIZES,
        TRACE_SIZE,
        check_detection_parity,
        export_detection_onnx,
    )

    trace_size = req.trace_size or TRACE_SIZE
    with stage(log, f"exporting ONNX (opset {req.opset}, image + image_size inputs)"):
        export_detection_onnx(model, onnx_path, opset=req.opset, trace_size=trace_size)
    sizes = req.parity_sizes or list(PARITY_SIZES)
    with stage(log, "parity: ONNX Runtime vs PyTorch detections on sample photos"):
        return check_detection_parity(model, onnx_path, sizes=sizes, trace_size=trace_size)


def _write_plan(result: ExportResult, options: TritonOptions, log: Log) -> None:
    from model_export.tensorrt import (
        TensorRTUnavailable,
        compute_profile,
        tensorrt_available,
        write_plan_entry,
    )

    if not tensorrt_available():
        result.plan_message = "the 'tensorrt' package is not importable here (needs an NVIDIA GPU machine)"
        log(f"[model_export] WARNING: TensorRT plan skipped: {result.plan_message}")
        return
    profile = compute_profile(result.metadata)
    with stage(log, f"building TensorRT FP16 plan (profile {profile.min_shape}..{profile.max_shape})"):
        try:
            result.plan_entry = write_plan_entry(
                result.entry.entry_dir.parent, result.metadata, result.entry.model_file,
                fp16=True, options=options, profile=profile, parity=result.parity.to_dict(),
            )
        except TensorRTUnavailable as exc:
            result.plan_message = str(exc)
            log(f"[model_export] WARNING: {exc}")

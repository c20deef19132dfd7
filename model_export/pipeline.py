"""The export pipeline: checkpoint -> network -> ONNX -> parity -> precision tiers -> repository
entries (-> TensorRT plans).

``export_model(ExportRequest(...))`` is what the CLI's ``export`` and ``demo`` commands run; tests
and other code call it directly, for every task (segmentation, landmarks, detection). Progress goes
to stderr as stage lines with timings.

The steps here are the ones every task shares: validation, checkpoint inspection, the random-init
banner, metadata, versions, the precision tiers (:mod:`model_export.precision`: made from the
FP32 graph, measured against it, failing the export like a parity failure when a threshold is
missed; nothing is written then), the repository entries, the TensorRT plans and the summary. The task's
exporter (:data:`model_export.exporters.EXPORTERS`) checks the task's options, builds and loads
the network, and exports it to ONNX with its parity check.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from service.contract import ExportInfo, ModelMetadata

from model_export.datasets import get_dataset
from model_export.errors import ExportError
from model_export.exporters import ExportOptions, exporter_for
from model_export.exporters.base import BuildJob, Exporter, Parity
from model_export.metadata import build_metadata
from model_export.errors import ParityError
from model_export.onnx.hrnet import DEFAULT_OPSET, MAX_OPSET
from model_export.precision.build import TierBuild, build_cpu_tiers, build_tensorrt_tiers, discard
from model_export.precision.tiers import PrecisionOptions
from model_export.progress import Log, stage, stderr_log
from model_export.random_init import DEMO_SEED
from model_export.repository import (
    ONNX_FILENAME, PLAN_FILENAME, EntryPaths, TritonOptions, write_entry, write_parity,
)
from model_export.served_merge import write_served_merge
from model_export.tensorrt import TensorRTUnavailable, plan_options, tensorrt_available

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(kw_only=True)
class ExportRequest:
    """One model to export. Exactly one of ``checkpoint`` / ``random_init`` must be given.

    ``arch`` may be None with a checkpoint that reveals it. ``seed`` is the random init's
    (default :data:`~model_export.random_init.DEMO_SEED`); a task whose weights ship in a package
    (face detection) takes neither and uses that file. ``notes`` are recorded in the metadata.
    ``triton`` holds the serving settings of the entry (instances, dynamic batching delay,
    warm-up, ONNX Runtime's TensorRT accelerator); ``tensorrt_plan`` also builds a ``<name>_trt``
    entry (segmentation and landmarks, on a GPU machine; the same as ``precision.tensorrt``
    holding ``fp16``). ``precision``: the lower-precision tiers written beside the FP32 entry
    (:class:`~model_export.precision.tiers.PrecisionOptions`). ``options`` are the task's
    (:class:`~model_export.exporters.SegmentationExport`,
    :class:`~model_export.exporters.LandmarkExport` or
    :class:`~model_export.exporters.DetectionExport`); None means the task's defaults.
    """

    task: str
    arch: str | None
    dataset: str
    name: str
    repo: Path
    checkpoint: Path | None = None
    random_init: bool = False
    seed: int | None = None
    tensorrt_plan: bool = False
    opset: int = DEFAULT_OPSET
    notes: list[str] = field(default_factory=list)
    overwrite: bool = True
    triton: TritonOptions = field(default_factory=TritonOptions)
    options: ExportOptions | None = None
    precision: PrecisionOptions = field(default_factory=PrecisionOptions)

    @property
    def tensorrt_tiers(self) -> tuple[str, ...]:
        """The TensorRT plans to build (``tensorrt_plan`` is FP16)."""
        tiers = (*(("fp16",) if self.tensorrt_plan else ()), *self.precision.tensorrt)
        return tuple(dict.fromkeys(tiers))


@dataclass
class ExportResult:
    """What :func:`export_model` wrote, plus the exact torch network it exported."""

    request: ExportRequest
    metadata: ModelMetadata
    entry: EntryPaths
    parity: Parity  # ParityReport, or DetectionParityReport for detection
    # torch.nn.Module in eval mode: normalised input (segmentation, landmarks), or pixels and
    # image_size (detection, HRNetFasterRCNN).
    model: object = field(repr=False)
    plan_entry: EntryPaths | None = None
    plan_message: str | None = None
    tiers: list[TierBuild] = field(default_factory=list, repr=False)
    tier_entries: list[EntryPaths] = field(default_factory=list)
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
        for tier, entry in zip(self.tiers, self.tier_entries):
            lines.append(f"  {entry.model_file} ({tier.precision} on {tier.engine})")
            lines.append(tier.summary())
        if self.plan_message:
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


def _validate(req: ExportRequest) -> tuple[ExportRequest, Exporter[Any, Any], Any]:
    """The request (with the task's packaged weights file when it names none), its exporter and
    options (the task's defaults unless given); ExportError for a request that cannot be
    exported."""
    if not _NAME_RE.match(req.name):
        raise ExportError(f"model name {req.name!r} must match {_NAME_RE.pattern}")
    if req.checkpoint is not None and req.random_init:
        raise ExportError("give exactly one of --checkpoint PATH or --random-init")
    ds = get_dataset(req.dataset)
    if ds.task != req.task:
        raise ExportError(f"dataset {ds.name!r} is a {ds.task} dataset, not {req.task}")
    exporter = exporter_for(req.task)
    if req.checkpoint is None and not req.random_init:
        # Tasks whose weights ship in a package (face detection) have a default file.
        default = exporter.default_checkpoint(req.arch)
        if default is None:
            raise ExportError("give exactly one of --checkpoint PATH or --random-init")
        req = replace(req, checkpoint=default)
    options = exporter.options(req.options)
    if req.checkpoint is not None and not Path(req.checkpoint).is_file():
        raise ExportError(f"checkpoint not found: {req.checkpoint}")
    if not 13 <= req.opset <= MAX_OPSET:
        raise ExportError(f"opset {req.opset} not supported by the exporter (13..{MAX_OPSET})")
    if req.triton.tensorrt_fp16 and req.triton.instance_kind != "gpu":
        raise ExportError("--tensorrt-accelerator needs --instance-kind gpu")
    exporter.validate(options, opset=req.opset, tensorrt_plan=bool(req.tensorrt_tiers))
    req.precision.validate(req.task)
    return req, exporter, options


def export_model(req: ExportRequest, log: Log = stderr_log) -> ExportResult:
    """Run the whole export of ``req``; raises ExportError, CheckpointError or ParityError."""
    import torch

    t_start = time.perf_counter()
    req, exporter, options = _validate(req)
    ds = get_dataset(req.dataset)
    repo = Path(req.repo)
    arch = req.arch
    if req.checkpoint is not None:
        with stage(log, f"inspecting {req.checkpoint}"):
            info = exporter.inspect(Path(req.checkpoint), arch)
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
    else:
        info = None
        # Always to stderr, whatever the progress sink: random weights must never pass silently.
        print(RANDOM_INIT_BANNER.format(name=req.name), file=sys.stderr, flush=True)
    if arch is None:
        if req.checkpoint is None:
            raise ExportError("--arch is required with --random-init (there is no checkpoint to "
                              "read it from); see `python -m model_export list-archs`")
        raise ExportError(f"--arch is required: {req.checkpoint} does not reveal its "
                          "architecture; see `python -m model_export list-archs`")
    seed = DEMO_SEED if req.seed is None else req.seed

    built = exporter.build(BuildJob(arch=arch, dataset=ds, checkpoint=req.checkpoint, info=info,
                                    seed=seed), options, log)
    model = built.model.eval()
    metadata = build_metadata(
        name=req.name,
        task=req.task,
        arch=arch,
        dataset=ds,
        weights=built.weights,
        export=_versions(req.opset, req.triton.tensorrt_fp16),
        max_batch_size=built.max_batch_size,
        align_corners=built.align_corners,
        notes=[*req.notes, *built.notes],
        **built.protocol_overrides,
    )

    with _staging(req.name) as staging:
        onnx_path = staging / "model.onnx"
        with torch.no_grad():
            parity = exporter.export(model, onnx_path, options, opset=req.opset, log=log)
        log(parity.summary())
        write_parity(staging, parity.to_dict())
        try:
            exporter.require_parity(parity)
        except Exception as exc:
            raise type(exc)(f"{exc}\nThe failed export is kept in {staging} for inspection."
                            ) from None

        tiers, plan_message = _build_tiers(req, exporter, options, onnx_path, staging, metadata,
                                           log)
        failed = [f"{t.name}: " + "; ".join(t.failures) for t in tiers if t.failures]
        if failed:
            raise ParityError("precision tier(s) differ from FP32 or their ONNX graph beyond the "
                              f"thresholds ({req.precision.thresholds}; TensorRT plans: "
                              "docs/precision.md):\n  " + "\n  ".join(failed)
                              + f"\nNothing was written; the export is kept in {staging} for "
                              "inspection.")

        parity_doc = parity.to_dict()
        if tiers:
            parity_doc["tiers"] = {
                t.name: {k: t.report[k] for k in ("precision", "engine", "passed")}
                | {"deltas": t.metadata.precision.deltas.model_dump(mode="json")
                   if t.metadata.precision.deltas else None} for t in tiers}
        with stage(log, f"writing {repo / req.name}"):
            entry = write_entry(repo, metadata, onnx_path, parity=parity_doc, options=req.triton,
                                move=not tiers, overwrite=req.overwrite)
            write_served_merge(repo, metadata, req.triton)
        result = ExportResult(request=req, metadata=metadata, entry=entry, parity=parity,
                              model=model, tiers=tiers, plan_message=plan_message)
        cpu = TritonOptions(**{**req.triton.__dict__, "instance_kind": "cpu",
                               "tensorrt_fp16": False})
        for tier in tiers:
            with stage(log, f"writing {repo / tier.name}"):
                # A plan's parity is its own engine's against the ONNX graph, never this copy.
                doc = tier.parity or {**parity.to_dict(), "tier": tier.report}
                if tier.tensorrt:
                    written = write_entry(repo, tier.metadata, tier.model_file, parity=doc,
                                          options=plan_options(req.triton),
                                          platform="tensorrt_plan",
                                          backend="tensorrt", model_filename=PLAN_FILENAME,
                                          overwrite=req.overwrite)
                else:
                    written = write_entry(repo, tier.metadata, tier.model_file, parity=doc,
                                          options=cpu, model_filename=ONNX_FILENAME,
                                          overwrite=req.overwrite)
                write_served_merge(repo, tier.metadata,
                                   plan_options(req.triton) if tier.tensorrt else cpu)
            result.tier_entries.append(written)
            if tier.tensorrt and tier.precision == "fp16":
                result.plan_entry = written
        discard(tiers)
    result.seconds = time.perf_counter() - t_start
    return result



@contextmanager
def _staging(name: str) -> Iterator[Path]:
    """A scratch folder for one export's files, removed when the export ends.

    It outlives the export only when a :class:`ParityError` names it (the failed graph and its
    parity.json, kept for inspection). An export stopped by anything else (a full disk, an
    interrupt, a bug) leaves nothing behind: a detection export stages 100-200 MB, and the
    leftovers of repeated runs once filled a test machine's /tmp.
    """
    path = Path(tempfile.mkdtemp(prefix=f"model_export_{name}_"))
    keep = False
    try:
        yield path
    except ParityError as exc:
        keep = str(path) in str(exc)
        raise
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def _build_tiers(req: ExportRequest, exporter: Exporter[Any, Any], options: Any, onnx_path: Path,
                 staging: Path, metadata: ModelMetadata, log: Log
                 ) -> tuple[list[TierBuild], str | None]:
    """The request's precision tiers, made and measured (nothing written yet), and why the
    TensorRT ones were not built, if so."""
    import torch

    popts = req.precision
    threads = max(1, torch.get_num_threads())
    sizes = exporter.tier_sizes(options)
    tiers: list[TierBuild] = []
    if popts.cpu_tiers:
        with stage(log, f"precision tiers {', '.join(popts.cpu_tiers)}: made from the FP32 "
                        "graph and measured against it"):
            tiers += build_cpu_tiers(req.task, onnx_path, staging, metadata, popts, sizes, log,
                                     threads=threads)
    message = None
    if req.tensorrt_tiers:
        if not tensorrt_available():
            message = ("the 'tensorrt' package is not importable here (needs an NVIDIA GPU "
                       "machine)")
            log(f"[model_export] WARNING: TensorRT plan(s) {', '.join(req.tensorrt_tiers)} "
                f"skipped: {message}")
        else:
            with stage(log, f"TensorRT plans {', '.join(req.tensorrt_tiers)}"):
                try:
                    tiers += build_tensorrt_tiers(req.task, onnx_path, staging, metadata, popts,
                                                  req.tensorrt_tiers, log, threads=threads)
                except TensorRTUnavailable as exc:
                    message = str(exc)
                    log(f"[model_export] WARNING: {exc}")
    for tier in tiers:
        log(tier.summary())
    return tiers, message

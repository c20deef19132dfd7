"""Make every precision tier of an export, measure it against FP32, pick its engine.

CPU tiers (:func:`build_cpu_tiers`):

* ``bf16``: the FP32 graph itself, run by OpenVINO with the BF16 inference hint. ONNX Runtime is
  no candidate: ONNX's ``Conv`` takes no bfloat16 tensors and its CPU provider has no BF16
  convolution kernels on x86 (its BF16 GEMM fast-math is for ARM64 only), so a converted graph
  fails to load;
* ``int8``: a static Q/DQ graph calibrated on real images (:mod:`.quantize`), which both ONNX
  Runtime and OpenVINO run.

Each candidate engine runs the measurement inputs (the parity photos at the parity sizes, plus a
user's folder), after one warm-up run of every input (OpenVINO compiles kernels for each new
shape); its outputs give the deltas against FP32 ONNX Runtime (:mod:`.deltas`), its second run
the milliseconds per pass. ``engine="auto"`` keeps the fastest candidate that meets the
thresholds (or, when none does, the fastest, and the export fails).

TensorRT tiers (:func:`build_tensorrt_tiers`, GPU machines): FP32 and FP16 plans, and INT8
plans built from a symmetric Q/DQ graph (explicit quantisation); each is run and checked against
the ONNX graph (:mod:`.plan_check`), and a plan that misses its limits, or cannot run, fails the
export.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service.contract import LandmarkMetadata, ModelMetadata, SegmentationMetadata, TierDeltas

from model_export.datasets import LANDMARK_INPUT_SIZE
from model_export.errors import ExportError
from model_export.metadata import tier_metadata
from model_export.precision.deltas import task_deltas
from model_export.precision.images import (
    CALIBRATION_PHOTOS, Feed, folder_images, parity_photos, sample_photos, task_feeds,
)
from model_export.precision.quantize import quantize_int8
from model_export.precision.tiers import (
    CLASS_AGREEMENT_MIN_FRACTION, PrecisionOptions, TierThresholds, tier_name,
)
from model_export.progress import Log

Runner = Callable[[Feed], dict[str, np.ndarray]]

ORT_NO_BF16 = ("ONNX Runtime cannot run BF16 here: ONNX Conv takes no bfloat16 inputs and the "
               "CPU provider has no BF16 convolution kernels on x86")


@dataclass
class TierBuild:
    """One tier made and measured: what its repository entry is written from."""

    name: str
    precision: str
    engine: str
    model_file: Path
    metadata: ModelMetadata
    report: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    tensorrt: bool = False
    #: The entry's own parity.json (plans: the engine against the ONNX graph); None: the FP32
    #: entry's report with this tier's under "tier".
    parity: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line per tier for the console."""
        d = self.metadata.precision.deltas
        figures = _figures(d) if d is not None else "not checked (no device to run it here)"
        verdict = "FAIL: " + "; ".join(self.failures) if self.failures else "ok"
        return f"  {self.name}: {self.precision} on {self.engine}: {figures} -> {verdict}"


def _figures(d: TierDeltas) -> str:
    parts = []
    if d.label_agreement is not None:
        parts.append(f"labels agree {d.label_agreement:.4f} (worst image "
                     f"{d.min_label_agreement:.4f})")
        if d.class_agreement:
            worst = min(d.class_agreement.items(), key=lambda kv: kv[1])
            parts.append(f"worst class IoU {worst[1]:.3f} ({worst[0]})")
    if d.nme is not None:
        parts.append(f"landmarks move {d.mean_displacement_px:.2f} px mean, "
                     f"{d.max_displacement_px:.2f} max, NME {d.nme:.4f}")
    if d.box_agreement is not None:
        parts.append(f"boxes agree {d.box_agreement:.3f}, max score diff {d.max_score_diff:.3f}")
    if d.max_output_rel_error is not None:
        parts.append(f"max output error {d.max_output_error:.3g} "
                     f"({d.max_output_rel_error:.2g} of the largest)")
    if d.ms_per_pass is not None and d.fp32_ms_per_pass:
        parts.append(f"{d.ms_per_pass:.1f} ms/pass ({d.ms_per_pass / d.fp32_ms_per_pass:.2f}x "
                     "FP32 at export)")
    return ", ".join(parts)


def ort_runner(path: str | Path, threads: int) -> Runner:
    """ONNX Runtime on the CPU (the FP32 reference, and INT8 candidates)."""
    from model_export.onnx.hrnet import onnx_session

    session = onnx_session(path, threads)
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(names, feed)))


def openvino_runner(path: str | Path, precision: str, threads: int) -> Runner:
    """OpenVINO exactly as the gateway runs it (``service.runtime.backends.openvino``)."""
    from service.runtime.backends.openvino import OpenVINOSession

    return OpenVINOSession(path, precision, threads=threads).run


def candidates(precision: str, forced: str) -> tuple[list[str], dict[str, str]]:
    """The engines that may run ``precision`` here (``forced``: just that one, or ExportError),
    and why the others may not."""
    from service.runtime.backends.openvino import openvino_available

    skipped: dict[str, str] = {}
    if precision == "bf16":
        skipped["onnxruntime"] = ORT_NO_BF16
    if not openvino_available():
        skipped["openvino"] = "openvino is not installed (pip install '.[openvino]')"
    engines = [e for e in ("onnxruntime", "openvino") if e not in skipped]
    if forced != "auto":
        if forced in skipped:
            raise ExportError(f"--engine {forced} cannot run {precision}: {skipped[forced]}")
        engines = [forced]
    if not engines:
        raise ExportError(f"no engine can run {precision} here: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()))
    return engines, skipped


def timed_outputs(run: Runner, feeds: list[tuple[str, Feed]]
                  ) -> tuple[list[dict[str, np.ndarray]], float]:
    """Outputs of every feed (first run, which also warms every shape) and the milliseconds per
    pass of a second run."""
    outputs = [run(f) for _, f in feeds]
    t0 = time.perf_counter()
    for _, f in feeds:
        run(f)
    return outputs, (time.perf_counter() - t0) * 1e3 / max(1, len(feeds))


def _significant(deltas: dict[str, Any]) -> dict[str, Any]:
    """The deltas the class threshold is checked on: classes of at least 1% of the pixels."""
    pixels = deltas.get("_class_pixels") or {}
    if not pixels:
        return deltas
    total = sum(pixels.values())
    keep = {k: v for k, v in deltas["class_agreement"].items()
            if pixels.get(k, 0) >= CLASS_AGREEMENT_MIN_FRACTION * total}
    return {**deltas, "class_agreement": keep}


@dataclass(frozen=True)
class Measurement:
    """The inputs every tier of one export is measured on, and FP32's answers to them."""

    task: str
    feeds: list[tuple[str, Feed]]
    sources: list[str]
    sizes: list[tuple[int, int]]
    reference: list[dict[str, np.ndarray]]
    fp32_ms: float
    labels: list[str]
    inter_ocular: tuple[int, int] | None

    def deltas(self, outputs: list[dict[str, np.ndarray]], ms: float | None) -> dict[str, Any]:
        """The task's figures of ``outputs`` (the ``_class_pixels`` helper included)."""
        d = task_deltas(self.task, self.reference, outputs, labels=self.labels,
                        inter_ocular=self.inter_ocular)
        d.update(ms_per_pass=None if ms is None else round(ms, 2),
                 fp32_ms_per_pass=round(self.fp32_ms, 2))
        return d

    def tier_deltas(self, d: dict[str, Any]) -> TierDeltas:
        """The contract's record of ``d``."""
        return TierDeltas(images=len({label.split("@")[0] for label, _ in self.feeds}),
                          sources=self.sources, sizes=self.sizes,
                          **{k: v for k, v in d.items() if not k.startswith("_")})


def measurement(task: str, onnx_path: Path, meta: ModelMetadata, popts: PrecisionOptions,
                sizes: list[tuple[int, int]], threads: int) -> Measurement:
    """The parity photos (and ``popts.eval_images``) at ``sizes``, with FP32's outputs."""
    images = parity_photos()
    sources = ["parity photos (" + ", ".join(n for n, _ in images) + ")"]
    if popts.eval_images is not None:
        extra = folder_images(popts.eval_images, popts.eval_count)
        images += [(f"user:{n}", rgb) for n, rgb in extra]
        sources.append(f"{len(extra)} images of {popts.eval_images}")
    feeds = task_feeds(task, images, sizes)
    reference, fp32_ms = timed_outputs(ort_runner(onnx_path, threads), feeds)
    inter = meta.landmarks.inter_ocular if isinstance(meta, LandmarkMetadata) else None
    used_sizes = [] if task == "landmarks" else [tuple(s) for s in sizes]
    return Measurement(task, feeds, sources, used_sizes, reference, fp32_ms,  # type: ignore[arg-type]
                       list(meta.labels), inter)


def calibration_feeds(task: str, popts: PrecisionOptions, sizes: list[tuple[int, int]]
                      ) -> tuple[list[Feed], str]:
    """The INT8 calibration inputs and a description of them (for the metadata)."""
    size = popts.calibration_size or (sizes[0] if sizes else LANDMARK_INPUT_SIZE)
    if popts.calibration_images is not None:
        images = folder_images(popts.calibration_images, popts.calibration_count)
        source = f"{len(images)} images of {popts.calibration_images}"
    else:
        images = sample_photos(CALIBRATION_PHOTOS[: popts.calibration_count])
        source = (f"{len(images)} scikit-image sample photos (" + ", ".join(n for n, _ in images)
                  + "; none of them a measurement photo)")
    where = "256x256 crops" if task == "landmarks" else f"{size[0]}x{size[1]}"
    return [f for _, f in task_feeds(task, images, [size])], f"{source} at {where}, min/max ranges"


def build_cpu_tiers(task: str, onnx_path: Path, staging: Path, meta: ModelMetadata,
                    popts: PrecisionOptions, sizes: list[tuple[int, int]], log: Log, *,
                    threads: int = 1, measured: Measurement | None = None) -> list[TierBuild]:
    """Every CPU tier of ``popts`` (BF16, INT8) made from the FP32 graph ``onnx_path`` and
    measured; the entries are not written here."""
    m = measured or measurement(task, onnx_path, meta, popts, sizes, threads)
    builds: list[TierBuild] = []
    for precision in popts.cpu_tiers:
        engines, skipped = candidates(precision, popts.engine)
        calibration = None
        model_file = onnx_path
        if precision == "int8":
            feeds, calibration = calibration_feeds(task, popts, sizes)
            model_file = staging / "int8" / "model.onnx"
            seconds = quantize_int8(onnx_path, model_file, feeds, task=task)
            calibration += (", activations uint8, weights int8 per output channel (Q/DQ); "
                            f"quantised in {seconds:.0f} s")
            log(f"  int8: calibrated on {calibration}")
        tried: dict[str, dict[str, Any]] = {}
        for engine in engines:
            run = (ort_runner(model_file, threads) if engine == "onnxruntime"
                   else openvino_runner(model_file, precision, threads))
            outputs, ms = timed_outputs(run, m.feeds)
            d = m.deltas(outputs, ms)
            tried[engine] = {"deltas": d, "failures": popts.thresholds.failures(
                TierDeltas(images=1, sources=[], **{k: v for k, v in _significant(d).items()
                                                    if not k.startswith("_")}))}
        passing = [e for e in engines if not tried[e]["failures"]]
        pool = passing or engines
        chosen = min(pool, key=lambda e: tried[e]["deltas"]["ms_per_pass"])
        why = ("the only engine asked for or able to run it" if len(engines) == 1 else
               f"fastest of {', '.join(engines)}" + (" meeting the thresholds" if passing else
                                                     " (none met the thresholds)"))
        deltas = m.tier_deltas(tried[chosen]["deltas"])
        slower = bool(deltas.ms_per_pass and deltas.ms_per_pass > m.fp32_ms)
        if slower:  # e.g. BF16 on a CPU without AMX: the tier costs accuracy and buys no speed
            log(f"  WARNING: {precision} on {chosen} ran {deltas.ms_per_pass / m.fp32_ms:.2f}x "
                "the FP32 time at export on this machine (no speed gained here)")
        name = tier_name(meta.name, precision)
        note = (f"Precision tier {precision.upper()} of {meta.name} on {chosen} ({why}); "
                "measured against FP32: " + _figures(deltas) + ".")
        tier_meta = tier_metadata(meta, name=name, precision=precision, engine=chosen,
                                  calibration=calibration, deltas=deltas, note=note)
        report = {
            "precision": precision, "engine": chosen, "chosen_because": why,
            "base_model": meta.name, "reference": deltas.reference, "sources": m.sources,
            "inputs": [label for label, _ in m.feeds], "calibration": calibration,
            "thresholds": {k: v for k, v in popts.thresholds.__dict__.items() if v is not None},
            "candidates": {e: {"ms_per_pass": t["deltas"]["ms_per_pass"],
                               "deltas": {k: v for k, v in t["deltas"].items()
                                          if not k.startswith("_")},
                               "failures": t["failures"]} for e, t in tried.items()},
            "not_candidates": skipped, "fp32_ms_per_pass": round(m.fp32_ms, 2),
            "slower_than_fp32": slower,
            "failures": tried[chosen]["failures"], "passed": not tried[chosen]["failures"],
            "note": "against FP32 ONNX Runtime on the same inputs, not against ground truth",
        }
        builds.append(TierBuild(name=name, precision=precision, engine=chosen,
                                model_file=model_file, metadata=tier_meta, report=report,
                                failures=list(tried[chosen]["failures"])))
    return builds


# --------------------------------------------------------------------------------------------
# TensorRT (GPU machines)
# --------------------------------------------------------------------------------------------


def tensorrt_sizes(meta: ModelMetadata) -> list[tuple[int, int]]:
    """Where a plan is measured: inside its optimisation profile (the protocol's window)."""
    from model_export.repository import representative_size

    if isinstance(meta, SegmentationMetadata):
        return [representative_size(meta)]
    return []


def build_tensorrt_tiers(task: str, onnx_path: Path, staging: Path, meta: ModelMetadata,
                         popts: PrecisionOptions, precisions: tuple[str, ...], log: Log, *,
                         threads: int = 1, plan_runner: Callable[[Path], Runner] | None = None,
                         workspace_bytes: int = 4 << 30) -> list[TierBuild]:
    """TensorRT plans of ``precisions`` (``fp32``, ``fp16``, ``int8``), each run on the export's
    sample photos and checked against the ONNX graph (:mod:`.plan_check`: output error, label
    agreement or landmark displacement; its report is the entry's parity.json) and measured
    against FP32 like any tier. ``plan_runner``: how a plan runs (default TensorRT's runtime on
    the GPU). A plan that cannot be run here is not checked and fails (its ``failures`` say
    why). Raises :class:`model_export.tensorrt.TensorRTUnavailable` without ``tensorrt``."""
    from model_export.precision.plan_check import (
        DEFAULT_PLAN_THRESHOLDS, compare_outputs, plan_parity,
    )
    from model_export.tensorrt import (
        TensorRTUnavailable, build_plan, compute_profile, profile_note, tensorrt_runner,
    )

    profile = compute_profile(meta)
    sizes = tensorrt_sizes(meta)
    m: Measurement | None = None
    builds: list[TierBuild] = []
    for precision in precisions:
        src, calibration = onnx_path, None
        if precision == "int8":
            feeds, calibration = calibration_feeds(task, popts, sizes or [(256, 256)])
            src = staging / "trt_int8" / "model.onnx"
            quantize_int8(onnx_path, src, feeds, symmetric=True, task=task)
            calibration += ", activations and weights int8 symmetric (explicit Q/DQ for TensorRT)"
        plan = staging / f"trt_{precision}" / "model.plan"
        log(f"  {precision}: building TensorRT plan (profile {profile.min_shape}..{profile.max_shape})")
        build_plan(src, plan, profile, fp16=precision != "fp32", int8=precision == "int8",
                   workspace_bytes=workspace_bytes, log=log)
        limits = DEFAULT_PLAN_THRESHOLDS[precision].merged(popts.plan_thresholds)
        deltas: TierDeltas | None = None
        check: dict[str, Any] | None = None
        failures: list[str] = []
        try:
            run = (plan_runner or tensorrt_runner)(plan)
        except TensorRTUnavailable as exc:
            failures = [f"the plan was built but cannot run here to be checked against the ONNX "
                        f"graph ({exc}); build it where CUDA and torch with CUDA are installed"]
            log(f"  {precision}: plan not checked ({exc})")
            run = None
        if run is not None:
            if m is None:
                m = measurement(task, onnx_path, meta, popts, sizes, threads)
            log(f"  {precision}: running the plan on {len(m.feeds)} inputs against the ONNX graph")
            outputs, ms = timed_outputs(run, m.feeds)
            check = compare_outputs(m.reference, outputs, [label for label, _ in m.feeds], task)
            d = m.deltas(outputs, ms)
            d.update(max_output_error=check["max_abs_error"],
                     max_output_rel_error=check["max_rel_error"])
            deltas = m.tier_deltas(d)
            failures = limits.failures(check) + popts.thresholds.failures(TierDeltas(
                images=1, sources=[], **{k: v for k, v in _significant(d).items()
                                         if not k.startswith("_")}))
        measured_note = ("checked against the ONNX graph: " + _figures(deltas)
                         if deltas is not None else "NOT checked: it could not run at export")
        name = tier_name(meta.name, precision, tensorrt=True)
        note = (f"TensorRT plan ({precision.upper()}) of {meta.name}; {profile_note(profile)} "
                f"{measured_note}.")
        tier_meta = tier_metadata(meta, name=name, precision=precision, engine="tensorrt",
                                  calibration=calibration, deltas=deltas, note=note)
        report = {"precision": precision, "engine": "tensorrt", "base_model": meta.name,
                  "profile": {"min": profile.min_shape, "opt": profile.opt_shape,
                              "max": profile.max_shape},
                  "calibration": calibration, "measured": deltas is not None,
                  "deltas": deltas.model_dump(mode="json") if deltas else None,
                  "failures": failures, "passed": not failures}
        build = TierBuild(name=name, precision=precision, engine="tensorrt", model_file=plan,
                          metadata=tier_meta, report=report, failures=failures, tensorrt=True)
        build.parity = plan_parity(name, meta.name, precision, check, limits, failures, report)
        builds.append(build)
    return builds


def discard(builds: list[TierBuild]) -> None:
    """Remove the staged files of ``builds`` (after their entries were written)."""
    for b in builds:
        if b.model_file.parent.name in ("int8", "trt_fp16", "trt_int8"):
            shutil.rmtree(b.model_file.parent, ignore_errors=True)


__all__ = ["TierBuild", "TierThresholds", "build_cpu_tiers", "build_tensorrt_tiers"]

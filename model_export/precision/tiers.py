"""Precision tier options and names.

CPU tiers (``--precision``): ``fp32`` (always written: the reference and the default), ``bf16``
and ``int8``. GPU tiers (``--tensorrt-precision``): TensorRT plans in ``fp32``, ``fp16`` or
``int8``. Entry names: ``<name>`` (FP32), ``<name>_bf16``, ``<name>_int8``, ``<name>_trt`` (FP16
plan, the name ``--tensorrt-plan`` always used), ``<name>_trt_fp32`` and ``<name>_trt_int8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.contract import TierDeltas

from model_export.errors import ExportError
from model_export.precision.plan_check import PlanThresholds

CPU_TIERS: tuple[str, ...] = ("fp32", "bf16", "int8")
TENSORRT_TIERS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: ``auto``: measure every engine that can run the tier and keep the fastest that meets the
#: thresholds.
ENGINES: tuple[str, ...] = ("auto", "onnxruntime", "openvino")
TRT_SUFFIX = "_trt"
#: The tasks whose exports make precision tiers (face detection, a small converted network,
#: has none yet).
TIER_TASKS: tuple[str, ...] = ("segmentation", "landmarks", "detection")
#: Classes smaller than this fraction of the FP32 pixels do not count for
#: ``min_class_agreement`` (a handful of pixels make a meaningless IoU).
CLASS_AGREEMENT_MIN_FRACTION = 0.01


def tier_name(name: str, precision: str, *, tensorrt: bool = False) -> str:
    """The entry name of ``precision`` of model ``name``."""
    if tensorrt:
        return name + TRT_SUFFIX + ("" if precision == "fp16" else f"_{precision}")
    return name if precision == "fp32" else f"{name}_{precision}"


@dataclass(frozen=True)
class TierThresholds:
    """Limits a tier must meet against FP32 (None: measured, not enforced). A tier that misses
    one fails the export (exit 3, like any parity failure)."""

    min_label_agreement: float | None = None
    min_class_agreement: float | None = None
    max_nme: float | None = None
    max_displacement_px: float | None = None
    min_box_agreement: float | None = None

    def failures(self, d: TierDeltas) -> list[str]:
        """What ``d`` misses, one line each (empty: passed)."""
        out: list[str] = []

        def low(value: float | None, limit: float | None, what: str) -> None:
            if limit is not None and value is not None and value < limit:
                out.append(f"{what} {value:.5f} < {limit}")

        def high(value: float | None, limit: float | None, what: str) -> None:
            if limit is not None and value is not None and value > limit:
                out.append(f"{what} {value:.5f} > {limit}")

        low(d.label_agreement, self.min_label_agreement, "label agreement")
        if self.min_class_agreement is not None and d.class_agreement:
            worst = min(d.class_agreement.items(), key=lambda kv: kv[1])
            low(worst[1], self.min_class_agreement, f"class agreement ({worst[0]})")
        high(d.nme, self.max_nme, "NME")
        high(d.max_displacement_px, self.max_displacement_px, "max landmark displacement px")
        low(d.box_agreement, self.min_box_agreement, "box agreement")
        return out

    def any(self) -> bool:
        """True when some limit is set."""
        return any(v is not None for v in self.__dict__.values())


@dataclass(frozen=True, kw_only=True)
class PrecisionOptions:
    """The precision tiers of an export (``ExportRequest.precision``).

    ``tiers``: CPU entries besides FP32 (which is always written); ``tensorrt``: TensorRT plan
    entries (GPU machines). ``engine``: of the CPU tiers (``auto`` measures). INT8 calibrates on
    ``calibration_images`` (a folder; default the project's sample photos) resized to
    ``calibration_size`` (default: the first parity size); every tier is measured on the parity
    photos and, when given, on ``eval_images`` (a folder, at most ``eval_count`` files), and
    must meet ``thresholds``. TensorRT plans are also checked against the ONNX graph itself
    (:mod:`model_export.precision.plan_check`): ``plan_thresholds`` replaces the limits it sets
    in the defaults of each plan's precision.
    """

    tiers: tuple[str, ...] = ("fp32",)
    tensorrt: tuple[str, ...] = ()
    engine: str = "auto"
    calibration_images: Path | None = None
    calibration_count: int = 16
    calibration_size: tuple[int, int] | None = None
    eval_images: Path | None = None
    eval_count: int = 32
    thresholds: TierThresholds = field(default_factory=TierThresholds)
    plan_thresholds: PlanThresholds = field(default_factory=PlanThresholds)

    @property
    def cpu_tiers(self) -> tuple[str, ...]:
        """The CPU tiers besides FP32, deduplicated, in the order given."""
        return tuple(dict.fromkeys(t for t in self.tiers if t != "fp32"))

    def validate(self, task: str) -> None:
        """ExportError for tiers or settings that cannot be exported."""
        for t in self.tiers:
            if t not in CPU_TIERS:
                hint = " (FP16 is a GPU tier: --tensorrt-precision fp16)" if t == "fp16" else ""
                raise ExportError(f"unknown CPU precision {t!r}; choose from "
                                  f"{', '.join(CPU_TIERS)}{hint}")
        for t in self.tensorrt:
            if t not in TENSORRT_TIERS:
                raise ExportError(f"unknown TensorRT precision {t!r}; choose from "
                                  f"{', '.join(TENSORRT_TIERS)}")
        if (self.cpu_tiers or self.tensorrt) and task not in TIER_TASKS:
            raise ExportError(f"precision tiers are made for {', '.join(TIER_TASKS)} exports, "
                              f"not {task}")
        if self.tensorrt and task == "detection":
            raise ExportError("TensorRT plans are not built for detection (NMS and RoIAlign give "
                              "data-dependent shapes)")
        if self.engine not in ENGINES:
            raise ExportError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.calibration_count < 1 or self.eval_count < 1:
            raise ExportError("calibration and evaluation image counts must be >= 1")
        for folder in (self.calibration_images, self.eval_images):
            if folder is not None and not Path(folder).is_dir():
                raise ExportError(f"image folder not found: {folder}")

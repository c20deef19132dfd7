"""A TensorRT plan checked against the ONNX graph it was built from: the plan entry's parity.

The export runs the built engine itself on the export's sample photos (the parity photos at the
plan's profile size) and the ONNX graph on ONNX Runtime CPU (FP32) on the same inputs, and
compares the raw outputs:

* ``max_abs_error``: the largest absolute difference of any output value (logits, heatmaps);
* ``max_rel_error``: per input, that difference over the largest magnitude of the ONNX output,
  the worst input's (scale-free: random and trained weights give logits of different sizes);
* segmentation: label agreement (argmax at the logits' 1/4 resolution) over all pixels and for
  the worst image; landmarks: the decoded points' displacement in crop pixels.

The plan fails, and the export with it (exit 3, nothing written), when a figure misses the
thresholds of its precision (:data:`DEFAULT_PLAN_THRESHOLDS`, or the export's overrides). INT8
plans have no default limits (they are measured; the tier thresholds apply as for CPU INT8).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class PlanThresholds:
    """Limits a plan must meet against the ONNX graph (None: measured, not enforced)."""

    max_rel_error: float | None = None
    min_label_agreement: float | None = None
    max_displacement_px: float | None = None

    def failures(self, check: dict[str, Any]) -> list[str]:
        """What ``check`` (:func:`compare_outputs`' figures) misses, one line each."""
        out: list[str] = []
        rel = check.get("max_rel_error")
        if self.max_rel_error is not None and rel is not None and not rel <= self.max_rel_error:
            out.append(f"max relative output error {rel:.3g} > {self.max_rel_error}")
        agree = check.get("min_label_agreement")
        if (self.min_label_agreement is not None and agree is not None
                and agree < self.min_label_agreement):
            out.append(f"label agreement (worst image) {agree:.5f} < {self.min_label_agreement}")
        shift = check.get("max_displacement_px")
        if (self.max_displacement_px is not None and shift is not None
                and shift > self.max_displacement_px):
            out.append(f"max landmark displacement {shift:.3f} px > {self.max_displacement_px}")
        return out

    def merged(self, overrides: "PlanThresholds") -> "PlanThresholds":
        """These limits with every limit ``overrides`` sets replacing ours."""
        return replace(self, **{k: v for k, v in overrides.__dict__.items() if v is not None})


#: Per plan precision. FP32 plans (TF32 off) differ from ONNX Runtime only by kernel rounding;
#: FP16 keeps about 3 significant digits through ~100 layers. Stated in docs/precision.md.
DEFAULT_PLAN_THRESHOLDS: dict[str, PlanThresholds] = {
    "fp32": PlanThresholds(max_rel_error=1e-3, min_label_agreement=0.999,
                           max_displacement_px=1.0),
    "fp16": PlanThresholds(max_rel_error=5e-2, min_label_agreement=0.99,
                           max_displacement_px=4.0),
    "int8": PlanThresholds(),
}


def compare_outputs(refs: Sequence[Outputs], gots: Sequence[Outputs], labels: Sequence[str],
                    task: str) -> dict[str, Any]:
    """The figures of a plan's outputs ``gots`` against the ONNX graph's ``refs`` (same inputs,
    same order, ``labels`` naming each input): overall and per input."""
    from model_export.precision.deltas import landmark_points

    per_input: list[dict[str, Any]] = []
    for label, ref, got in zip(labels, refs, gots, strict=True):
        row: dict[str, Any] = {"input": label}
        abs_err = rel_err = 0.0
        for name, r in ref.items():
            g = np.asarray(got[name])
            if g.shape != r.shape:
                raise ValueError(f"{label}: plan output {name} has shape {g.shape}, the ONNX "
                                 f"graph's {r.shape}")
            diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
            err = float(diff.max()) if diff.size else 0.0
            if not np.isfinite(g).all():
                err = float("inf")
            scale = float(np.abs(r).max()) if r.size else 0.0
            abs_err = max(abs_err, err)
            rel_err = max(rel_err, err / scale if scale > 0 else err)
        row["max_abs_error"], row["max_rel_error"] = abs_err, rel_err
        if task == "segmentation":
            row["label_agreement"] = float((ref["logits"].argmax(1) == got["logits"].argmax(1))
                                           .mean())
        elif task == "landmarks":
            shift = np.linalg.norm(landmark_points(ref["heatmaps"])
                                   - landmark_points(got["heatmaps"]), axis=-1)
            row["max_displacement_px"] = float(shift.max())
        per_input.append(row)
    out: dict[str, Any] = {
        "max_abs_error": max(r["max_abs_error"] for r in per_input),
        "max_rel_error": max(r["max_rel_error"] for r in per_input),
    }
    if task == "segmentation":
        pixels = [int(np.prod(r["logits"].argmax(1).shape)) for r in refs]
        out["label_agreement"] = float(sum(p * r["label_agreement"]
                                           for p, r in zip(pixels, per_input)) / sum(pixels))
        out["min_label_agreement"] = min(r["label_agreement"] for r in per_input)
    elif task == "landmarks":
        out["max_displacement_px"] = max(r["max_displacement_px"] for r in per_input)
    out["per_input"] = per_input
    return out


def plan_parity(name: str, base_model: str, precision: str, check: dict[str, Any] | None,
                thresholds: PlanThresholds, failures: list[str], tier_report: dict[str, Any]
                ) -> dict[str, Any]:
    """The plan entry's parity.json: this engine against the ONNX graph (no copy of the ONNX
    graph's own report against PyTorch, which is the base entry's parity.json)."""
    return {
        "kind": "tensorrt_plan",
        "model": name,
        "precision": precision,
        "reference": f"the ONNX graph of '{base_model}' on ONNX Runtime CPU (FP32), same inputs",
        "base_model_parity": f"../{base_model}/parity.json (the ONNX graph against PyTorch)",
        "measured": check is not None,
        **({k: v for k, v in check.items()} if check is not None else {}),
        "thresholds": {k: v for k, v in thresholds.__dict__.items() if v is not None},
        "failures": failures,
        "passed": check is not None and not failures,
        "tier": tier_report,
    }


__all__ = ["DEFAULT_PLAN_THRESHOLDS", "PlanThresholds", "compare_outputs", "plan_parity"]

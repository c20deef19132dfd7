"""OpenVINO sessions: how the embedded backend runs an entry whose metadata names the engine
``openvino`` (``precision.engine``), e.g. a BF16 tier.

The entry's ``1/model.onnx`` is read by OpenVINO directly and compiled for the CPU with the
entry's precision as the inference hint (:data:`OPENVINO_HINTS`). The hint is always set: on a CPU
with AVX512-BF16 or AMX, OpenVINO's default is BF16, so an entry that says FP32 or INT8 would
otherwise run in BF16 without saying so. The export measures its tiers with this very class, so
the deltas it stores are those of the arithmetic served here.

A session has the ONNX Runtime session's shape as the embedded backend uses it
(:meth:`begin` -> a cancellable handle, :meth:`run`, :meth:`cancel`); ``openvino`` is imported
only when an entry needs it (``pip install '.[openvino]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: OpenVINO's ``INFERENCE_PRECISION_HINT`` per precision tier. INT8 graphs (Q/DQ) run their
#: quantised layers in INT8 and the rest in FP32, as ONNX Runtime does.
OPENVINO_HINTS: dict[str, str] = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_available() -> bool:
    """True when ``import openvino`` works."""
    try:
        import openvino  # noqa: F401
    except Exception:
        return False
    return True


def openvino_config(precision: str, threads: int = 0) -> dict[str, Any]:
    """The CPU compile properties of an entry of ``precision`` (``threads`` 0: OpenVINO's choice).

    Latency hint (one stream: requests are few and large); no core pinning, which on a shared
    machine pins worker threads to cores that other work also needs.
    """
    if precision not in OPENVINO_HINTS:
        raise ValueError(f"OpenVINO does not serve precision {precision!r} here "
                         f"(only {', '.join(OPENVINO_HINTS)})")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision],
                              "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVINOSession:
    """One compiled model; each run uses its own infer request (so concurrent runs are safe)."""

    engine = "openvino"

    def __init__(self, path: str | Path, precision: str, *, threads: int = 0) -> None:
        import openvino as ov

        core = ov.Core()
        self.precision = precision
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                           openvino_config(precision, threads))
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def providers(self) -> list[str]:
        """What runs the entry, as ``/v1/models`` reports it (``openvino:CPU:<precision>``)."""
        return [f"openvino:CPU:{self.inference_precision()}"]

    def inference_precision(self) -> str:
        """The precision the compiled model reports (``bf16``, ``f32``), for checks and logs."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def begin(self) -> Any:
        """A fresh infer request: the handle of one run, which :meth:`cancel` stops."""
        return self.compiled.create_infer_request()

    def run(self, inputs: dict[str, np.ndarray], handle: Any = None) -> dict[str, np.ndarray]:
        """Every output by name (copies: they outlive the request)."""
        request = handle if handle is not None else self.begin()
        result = request.infer({name: np.ascontiguousarray(a) for name, a in inputs.items()})
        by_port = {port.get_any_name(): value for port, value in result.items()}
        return {name: np.array(by_port[name]) for name in self.output_names}

    @staticmethod
    def cancel(handle: Any) -> None:
        """Stop the run of ``handle`` (the request left)."""
        handle.cancel()

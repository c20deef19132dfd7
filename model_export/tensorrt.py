"""TensorRT plans from the exported ONNX graph (GPU machines with the ``tensorrt`` package).

A plan is written as a sibling repository entry ``<name>_trt`` (FP16), ``<name>_trt_fp32`` or
``<name>_trt_int8`` (INT8, built from an explicit Q/DQ graph) with ``platform: "tensorrt_plan"``
and ``1/model.plan``, carrying the same metadata under the new name with its precision (engine
``tensorrt``). The entries are made by :func:`model_export.precision.build.build_tensorrt_tiers`,
which runs each built plan (:func:`tensorrt_runner`) against the ONNX graph
(:mod:`model_export.precision.plan_check`) before anything is written. A plan is specific to the
GPU model and TensorRT version that built it: build it on the serving machine.

The optimisation profile (the shapes TensorRT tunes for) comes from the serving protocol
(:mod:`service.runtime.profiles`, shared with the embedded backend's TensorRT provider).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service.runtime.profiles import TrtProfile, compute_profile

from model_export.progress import Log, stderr_log
from model_export.repository import TritonOptions

TRT_SUFFIX = "_trt"
__all__ = ["TRT_SUFFIX", "TensorRTUnavailable", "TrtProfile", "build_plan", "compute_profile",
           "plan_options", "profile_note", "progress_monitor", "tensorrt_available",
           "tensorrt_runner"]


class TensorRTUnavailable(RuntimeError):
    """The ``tensorrt`` package is not importable here."""


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    profile: TrtProfile,
    *,
    fp16: bool = True,
    int8: bool = False,
    workspace_bytes: int = 4 << 30,
    log: Log | None = None,
) -> Path:
    """Parse ``onnx_path`` with TensorRT and serialise an engine for ``profile`` to ``plan_path``.

    Precision: ``fp16`` lets TensorRT pick FP16 kernels; neither ``fp16`` nor ``int8`` is a true
    FP32 plan (TF32 is cleared too: Ampere and later would otherwise use it for convolutions,
    10 mantissa bits, under the name FP32). ``int8``: the graph carries explicit Q/DQ nodes
    (symmetric INT8, :mod:`model_export.precision.quantize`); the INT8 flag lets TensorRT run the
    quantised layers in INT8 (and ``fp16`` the others in FP16). No calibrator: the scales are
    the graph's.

    ``log`` receives progress lines while TensorRT builds (its IProgressMonitor, TensorRT >= 10;
    stage lines only on older versions): a W48 plan takes minutes.
    """
    say = log or stderr_log
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken CUDA install
        raise TensorRTUnavailable(
            "TensorRT plans need the 'tensorrt' Python package and an NVIDIA GPU; "
            f"import failed ({exc}). Serve the ONNX entry (optionally with "
            "--tensorrt-accelerator fp16) or build the plan on the GPU machine."
        ) from exc
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 8/9 need EXPLICIT_BATCH; 10 keeps the member only as a deprecated no-op.
    if int(str(trt.__version__).split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say(f"    TensorRT {trt.__version__}: parsing {onnx_path}")
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise RuntimeError("this GPU has no fast FP16; build with fp16=False")
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        if not builder.platform_has_fast_int8:
            raise RuntimeError("this GPU has no fast INT8; build an FP16 plan instead")
        config.set_flag(trt.BuilderFlag.INT8)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    monitor = progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor
    opt = builder.create_optimization_profile()
    opt.set_shape(profile.input_name, profile.min_shape, profile.opt_shape, profile.max_shape)
    config.add_optimization_profile(opt)
    say(f"    TensorRT: building the {precision.upper()} engine for {profile.min_shape}.."
        f"{profile.max_shape} (tactic timing takes minutes for large networks)"
        + ("" if monitor is not None else "; this TensorRT has no progress monitor"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes(serialized)
    plan_path.write_bytes(data)
    say(f"    TensorRT: {precision.upper()} plan of {len(data) / 1e6:.1f} MB built in "
        f"{time.perf_counter() - t0:.1f}s")
    return plan_path


def progress_monitor(trt: Any, log: Log) -> Any | None:
    """A ``trt.IProgressMonitor`` that logs each build phase, its steps (at most about ten lines
    per phase) and its duration; None where this TensorRT has no such interface (< 10)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # the pybind11 trampoline must be initialised
            self._phases: dict[str, tuple[float, int, int]] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else self._phases.get(parent_phase, (0, 0, -1))[2] + 1
            self._phases[phase_name] = (time.perf_counter(), max(1, int(num_steps)), depth)
            log(f"    {'  ' * depth}TensorRT: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            t0, steps, depth = self._phases.get(phase_name, (time.perf_counter(), 1, 0))
            every = max(1, steps // 10)
            if depth == 0 and ((step + 1) % every == 0 or step + 1 == steps):
                log(f"    TensorRT: {phase_name}: step {step + 1}/{steps} "
                    f"({time.perf_counter() - t0:.0f}s)")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            t0, _, depth = self._phases.pop(phase_name, (time.perf_counter(), 1, 0))
            log(f"    {'  ' * depth}TensorRT: {phase_name} done in "
                f"{time.perf_counter() - t0:.1f}s")

    return _Monitor()


def profile_note(profile: TrtProfile) -> str:
    """What a plan's profile limits, for its notes."""
    return f"input shapes limited to min {profile.min_shape}, max {profile.max_shape}."


def tensorrt_runner(plan_path: str | Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A function running the plan ``plan_path`` on the GPU (TensorRT 10 runtime, buffers from
    torch's CUDA allocator): graph inputs -> every output, as numpy. The export measures TensorRT
    tiers with it; TensorRTUnavailable without ``tensorrt`` or a CUDA device."""
    try:
        import tensorrt as trt
        import torch
    except Exception as exc:
        raise TensorRTUnavailable(f"tensorrt is not importable ({exc})") from exc
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA device to run the plan on")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    stream = torch.cuda.Stream()

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        buffers: dict[str, Any] = {}
        for name, array in feed.items():
            buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
            context.set_input_shape(name, tuple(array.shape))
            context.set_tensor_address(name, buffers[name].data_ptr())
        for name in outputs:
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)),
                                        dtype=torch.float32, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the plan")
        stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in outputs}

    return run


def plan_options(options: TritonOptions | None) -> TritonOptions:
    """Serving settings of a plan entry: GPU instances, no ONNX Runtime accelerator."""
    opts = options or TritonOptions()
    return TritonOptions(**{**opts.__dict__, "tensorrt_fp16": False, "instance_kind": "gpu"})

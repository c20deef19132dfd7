"""TensorRT plans from the exported ONNX graph (GPU machines with the ``tensorrt`` package).

A plan is written as a sibling repository entry ``<name>_trt`` (FP16) or ``<name>_trt_int8``
(INT8, built from an explicit Q/DQ graph, :mod:`model_export.precision`) with
``platform: "tensorrt_plan"`` and ``1/model.plan``, carrying the same metadata under the new name
with its precision (engine ``tensorrt``). A plan is specific to the GPU
model and TensorRT version that built it: build it on the serving machine.

The optimisation profile (the shapes TensorRT tunes for) comes from the serving protocol
(:mod:`service.runtime.profiles`, shared with the embedded backend's TensorRT provider).
"""

from __future__ import annotations

from pathlib import Path

from typing import Any, Callable

import numpy as np

from service.contract import ModelMetadata, PrecisionInfo
from service.runtime.profiles import TrtProfile, compute_profile

from model_export.repository import PLAN_FILENAME, EntryPaths, TritonOptions, write_entry

TRT_SUFFIX = "_trt"
__all__ = ["TRT_SUFFIX", "TensorRTUnavailable", "TrtProfile", "build_plan", "compute_profile",
           "plan_options", "profile_note", "tensorrt_available", "tensorrt_runner",
           "trt_metadata", "write_plan_entry"]


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
) -> Path:
    """Parse ``onnx_path`` with TensorRT and serialise an engine for ``profile`` to ``plan_path``.

    ``int8``: the graph carries explicit Q/DQ nodes (symmetric INT8, :mod:`model_export.precision
    .quantize`); the INT8 flag lets TensorRT run the quantised layers in INT8 (and ``fp16`` the
    others in FP16). No calibrator: the scales are the graph's.
    """
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken CUDA install
        raise TensorRTUnavailable(
            "TensorRT plans need the 'tensorrt' Python package and an NVIDIA GPU; "
            f"import failed ({exc}). Serve the ONNX entry (optionally with "
            "--tensorrt-accelerator fp16) or build the plan on the GPU machine."
        ) from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    # TensorRT 8/9 need EXPLICIT_BATCH; 10 keeps the member only as a deprecated no-op.
    if int(str(trt.__version__).split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
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
    opt = builder.create_optimization_profile()
    opt.set_shape(profile.input_name, profile.min_shape, profile.opt_shape, profile.max_shape)
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def profile_note(profile: TrtProfile) -> str:
    """What a plan's profile limits, for its notes."""
    return f"input shapes limited to min {profile.min_shape}, max {profile.max_shape}."


def trt_metadata(metadata: ModelMetadata, profile: TrtProfile, fp16: bool) -> ModelMetadata:
    """The plan entry's metadata: same contract, new name, its precision, a note on the profile."""
    precision = "fp16" if fp16 else "fp32"
    note = f"TensorRT plan ({precision.upper()}); {profile_note(profile)}"
    info = PrecisionInfo(precision=precision, engine="tensorrt", base_model=metadata.name)
    return metadata.model_copy(update={"name": metadata.name + TRT_SUFFIX, "precision": info,
                                       "notes": [*metadata.notes, note]})


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


def write_plan_entry(
    repo: str | Path,
    metadata: ModelMetadata,
    onnx_path: str | Path,
    *,
    fp16: bool = True,
    options: TritonOptions | None = None,
    profile: TrtProfile | None = None,
    parity: dict | None = None,
    workspace_bytes: int = 4 << 30,
) -> EntryPaths:
    """Build a plan from ``onnx_path`` and write the ``<name>_trt`` entry next to the ONNX one."""
    profile = profile or compute_profile(metadata)
    plan_meta = trt_metadata(metadata, profile, fp16)
    staging = Path(repo) / f".{plan_meta.name}.plan"
    build_plan(onnx_path, staging, profile, fp16=fp16, workspace_bytes=workspace_bytes)
    # The TRT accelerator option belongs to the ONNX Runtime backend, not to plans.
    opts = plan_options(options)
    return write_entry(
        repo,
        plan_meta,
        staging,
        parity=parity,
        options=opts,
        platform="tensorrt_plan",
        backend="tensorrt",
        model_filename=PLAN_FILENAME,
        move=True,
    )

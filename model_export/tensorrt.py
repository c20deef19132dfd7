"""TensorRT plans from the exported ONNX graph (GPU machines with the ``tensorrt`` package).

A plan is written as a sibling repository entry ``<name>_trt`` (``platform: "tensorrt_plan"``,
``1/model.plan``) carrying the same metadata under the new name. A plan is specific to the GPU
model and TensorRT version that built it: build it on the serving machine.

The optimisation profile (the shapes TensorRT tunes for) comes from the serving protocol
(:mod:`service.runtime.profiles`, shared with the embedded backend's TensorRT provider).
"""

from __future__ import annotations

from pathlib import Path

from service.contract import ModelMetadata
from service.runtime.profiles import TrtProfile, compute_profile

from model_export.repository import PLAN_FILENAME, EntryPaths, TritonOptions, write_entry

TRT_SUFFIX = "_trt"
__all__ = ["TRT_SUFFIX", "TensorRTUnavailable", "TrtProfile", "build_plan", "compute_profile",
           "tensorrt_available", "trt_metadata", "write_plan_entry"]


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
    workspace_bytes: int = 4 << 30,
) -> Path:
    """Parse ``onnx_path`` with TensorRT and serialise an engine for ``profile`` to ``plan_path``."""
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


def trt_metadata(metadata: ModelMetadata, profile: TrtProfile, fp16: bool) -> ModelMetadata:
    """The plan entry's metadata: same contract, new name, a note on the profile."""
    note = (
        f"TensorRT plan ({'FP16' if fp16 else 'FP32'}); input shapes limited to "
        f"min {profile.min_shape}, max {profile.max_shape}."
    )
    return metadata.model_copy(update={"name": metadata.name + TRT_SUFFIX, "notes": [*metadata.notes, note]})


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
    opts = options or TritonOptions()
    # The TRT accelerator option belongs to the ONNX Runtime backend, not to plans.
    opts = TritonOptions(**{**opts.__dict__, "tensorrt_fp16": False, "instance_kind": "gpu"})
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

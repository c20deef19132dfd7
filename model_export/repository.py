"""Production Triton repository entries: ``config.pbtxt``, ``hrnet.json``, ``parity.json``,
``warmup/`` and ``1/model.onnx`` (or ``1/model.plan``, :mod:`model_export.tensorrt`).

``config.pbtxt`` is rendered from a ``tritonclient.grpc.model_config_pb2.ModelConfig`` message with
``google.protobuf.text_format``, so it is valid by construction. :func:`read_config` parses one back
and :func:`write_config` writes any ``ModelConfig``; a test harness can therefore derive a variant
of an entry with ``read_config`` -> edit -> ``write_config``, as the CPU twin of
:mod:`model_export.triton_cpu` does.

The repository metadata (:class:`service.contract.ModelMetadata`) is stored twice: pretty-printed
in ``hrnet.json`` and compact in the config's ``parameters { key: "hrnet_metadata" }``.

Warm-up: one ``model_warmup`` sample feeds every input. The pixel input gets zero or random data at
a representative size; a detection graph's ``image_size`` input (INT64 ``[2]``) must hold the real
(h, w) of that sample, so it is read from ``warmup/image_size_<h>x<w>`` (raw little-endian int64,
Triton's ``input_data_file``), which :func:`write_entry` writes next to ``config.pbtxt``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from service.contract import (
    IMAGE_SIZE, METADATA_FILENAME, METADATA_PARAMETER, DetectionMetadata, FaceDetectionMetadata,
    LandmarkMetadata, ModelMetadata, SegmentationMetadata, padded,
)

CONFIG_FILENAME = "config.pbtxt"
PARITY_FILENAME = "parity.json"
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
VERSION = "1"
WARMUP_DIRNAME = "warmup"

_DTYPES = {
    "FP32": mc.TYPE_FP32,
    "FP16": mc.TYPE_FP16,
    "INT64": mc.TYPE_INT64,
    "INT32": mc.TYPE_INT32,
    "UINT8": mc.TYPE_UINT8,
}

InstanceKind = Literal["gpu", "cpu"]
Warmup = Literal["zero", "random", "none"]


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings of one entry (everything in config.pbtxt that metadata does not fix)."""

    instance_kind: InstanceKind = "gpu"
    instance_count: int = 1
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_microseconds: int = 2000
    warmup: Warmup = "zero"
    warmup_size: tuple[int, int] | None = None
    tensorrt_fp16: bool = False
    tensorrt_workspace_bytes: int = 1 << 30
    served_merge: bool = True
    """Segmentation: also write ``<name>__merge`` and ``<name>__segment`` (model_export/
    served_merge/), which run a request's passes and the official merge on the server."""


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Default preferred sizes: half of the maximum and the maximum (deduplicated, >= 1)."""
    return sorted({max(1, max_batch_size // 2), max(1, max_batch_size)})


def representative_size(metadata: ModelMetadata) -> tuple[int, int]:
    """A typical (h, w) network input: a segmentation window (crop size), the landmark crop, or
    the largest padded landscape detection input (e.g. 800x1344 for 1333x800), the face
    detector's input square."""
    if isinstance(metadata, DetectionMetadata):
        long_side, short_side = max(metadata.detection.max_size), min(metadata.detection.max_size)
        d = max(1, metadata.detection.size_divisor)
        return padded(short_side, d), padded(long_side, d)
    if isinstance(metadata, SegmentationMetadata):
        h, w = metadata.segmentation.crop_size
        return int(h), int(w)
    if isinstance(metadata, LandmarkMetadata):
        h, w = metadata.landmarks.input_size
        return int(h), int(w)
    if isinstance(metadata, FaceDetectionMetadata):
        h, w = metadata.face_detection.input_size
        return int(h), int(w)
    raise ValueError(f"no representative input size for task {metadata.task!r}")


def build_model_config(
    metadata: ModelMetadata,
    options: TritonOptions | None = None,
    *,
    platform: str = "onnxruntime_onnx",
    backend: str | None = "onnxruntime",
    default_model_filename: str | None = None,
) -> mc.ModelConfig:
    """The ``ModelConfig`` of an entry serving ``metadata``'s graph.

    An entry whose ``precision.engine`` is ``openvino`` (a BF16 tier, or an INT8 one measured
    faster there) gets Triton's OpenVINO backend on CPU instances, reading ``model.onnx``, with
    ``HINT_BF16`` for BF16. (That backend has no FP32 hint: on CPUs with AVX512-BF16 or AMX,
    where OpenVINO defaults to BF16, only the ONNX Runtime backend keeps FP32 and INT8 exact,
    which is why those tiers default to it.)
    """
    options = options or TritonOptions()
    extra: dict[str, str] = {}
    if metadata.precision.engine == "openvino":
        platform, backend, default_model_filename = "", "openvino", ONNX_FILENAME
        options = TritonOptions(**{**options.__dict__, "instance_kind": "cpu",
                                   "tensorrt_fp16": False})
        extra = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if metadata.precision.precision == "bf16":
            extra["HINT_BF16"] = "YES"
    cfg = mc.ModelConfig(name=metadata.name, platform=platform, max_batch_size=metadata.max_batch_size)
    if backend:
        cfg.backend = backend
    if default_model_filename:
        cfg.default_model_filename = default_model_filename
    for spec in metadata.inputs:
        cfg.input.add(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims))
    for spec in metadata.outputs:
        cfg.output.add(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims))
    if metadata.max_batch_size > 0:
        sizes = options.preferred_batch_sizes or preferred_batch_sizes(metadata.max_batch_size)
        cfg.dynamic_batching.preferred_batch_size.extend(
            sorted({int(s) for s in sizes if 0 < int(s) <= metadata.max_batch_size})
        )
        cfg.dynamic_batching.max_queue_delay_microseconds = int(options.max_queue_delay_microseconds)
    kind = mc.ModelInstanceGroup.KIND_GPU if options.instance_kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(count=int(options.instance_count), kind=kind)
    if options.warmup != "none":
        _add_warmup(cfg, metadata, options)
    if options.tensorrt_fp16:
        if options.instance_kind != "gpu":
            raise ValueError("the TensorRT execution accelerator needs instance kind 'gpu'")
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = "FP16"
        acc.parameters["max_workspace_size_bytes"] = str(int(options.tensorrt_workspace_bytes))
        # Engines are built per shape range; caching them spares rebuilds after restarts.
        acc.parameters["trt_engine_cache_enable"] = "true"
        acc.parameters["trt_engine_cache_path"] = f"/tmp/triton_trt_cache/{metadata.name}"
    for key, value in extra.items():
        cfg.parameters[key].string_value = value
    cfg.parameters[METADATA_PARAMETER].string_value = metadata.to_json()
    return cfg


def warmup_files(metadata: ModelMetadata, options: TritonOptions | None = None) -> dict[str, bytes]:
    """Data files of the warm-up sample (``warmup/<name>``): the ``image_size`` value, if any."""
    options = options or TritonOptions()
    if options.warmup == "none" or not any(s.name == IMAGE_SIZE for s in metadata.inputs):
        return {}
    h, w = options.warmup_size or representative_size(metadata)
    return {f"{IMAGE_SIZE}_{h}x{w}": np.array([h, w], "<i8").tobytes()}


def _add_warmup(cfg: mc.ModelConfig, metadata: ModelMetadata, options: TritonOptions) -> None:
    h, w = options.warmup_size or representative_size(metadata)
    image_dims: list[int] = []
    sample = mc.ModelWarmup(batch_size=1)
    for spec in metadata.inputs:
        dims = [int(d) for d in spec.dims]
        inp = sample.inputs[spec.name]
        inp.data_type = _DTYPES[spec.dtype]
        if spec.name == IMAGE_SIZE:
            inp.dims.extend(dims)
            inp.input_data_file = f"{IMAGE_SIZE}_{h}x{w}"  # written by write_entry
            continue
        if len(dims) == 3:
            dims = [dims[0], h, w]
        dims = [d if d > 0 else 1 for d in dims]
        image_dims = image_dims or dims
        inp.dims.extend(dims)
        if options.warmup == "zero":
            inp.zero_data = True
        else:
            inp.random_data = True
    sample.name = f"{options.warmup}_{'x'.join(map(str, image_dims))}"
    cfg.model_warmup.append(sample)


def config_to_text(config: mc.ModelConfig) -> str:
    """Protobuf text format, as Triton reads it."""
    return text_format.MessageToString(config)


def write_config(entry_dir: str | Path, config: mc.ModelConfig) -> Path:
    """Write ``config`` to ``<entry_dir>/config.pbtxt`` (creating the folder)."""
    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    path = entry_dir / CONFIG_FILENAME
    path.write_text(config_to_text(config))
    return path


def read_config(path: str | Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` (or the entry folder holding one) into a ``ModelConfig``."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def metadata_from_config(config: mc.ModelConfig) -> ModelMetadata:
    """The ``hrnet_metadata`` parameter of a config, validated."""
    if METADATA_PARAMETER not in config.parameters:
        raise KeyError(f"config of {config.name!r} has no {METADATA_PARAMETER!r} parameter")
    return ModelMetadata.from_json(config.parameters[METADATA_PARAMETER].string_value)


def write_metadata(entry_dir: str | Path, metadata: ModelMetadata) -> Path:
    """Write the pretty ``hrnet.json`` sidecar."""
    path = Path(entry_dir) / METADATA_FILENAME
    path.write_text(json.dumps(json.loads(metadata.to_json()), indent=2) + "\n")
    return path


def read_metadata(entry_dir: str | Path) -> ModelMetadata:
    """Read an entry's ``hrnet.json``."""
    return ModelMetadata.from_json((Path(entry_dir) / METADATA_FILENAME).read_text())


def write_parity(entry_dir: str | Path, parity: dict[str, Any]) -> Path:
    """Write ``parity.json``."""
    path = Path(entry_dir) / PARITY_FILENAME
    path.write_text(json.dumps(parity, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class EntryPaths:
    """Files of one written entry."""

    entry_dir: Path
    model_file: Path
    config: Path
    metadata: Path
    parity: Path | None


def write_entry(
    repo: str | Path,
    metadata: ModelMetadata,
    model_file: str | Path,
    *,
    parity: dict[str, Any] | None = None,
    options: TritonOptions | None = None,
    platform: str = "onnxruntime_onnx",
    backend: str | None = "onnxruntime",
    model_filename: str = ONNX_FILENAME,
    move: bool = False,
    overwrite: bool = True,
) -> EntryPaths:
    """Create ``<repo>/<metadata.name>/`` with the model file under ``1/`` and its sidecars
    (segmentation: also the merge graph ``1/merge.onnx`` its metadata names; the Triton models
    of the served merge beside it are :func:`model_export.served_merge.write_served_merge`'s).

    An existing entry of that name is replaced when ``overwrite`` (else FileExistsError). The
    entry is assembled in a sibling temporary folder and renamed into place, so Triton polling
    the repository never sees half an entry.
    """
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / metadata.name
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
    tmp = repo / f".{metadata.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / VERSION).mkdir(parents=True)
    target = tmp / VERSION / model_filename
    if move:
        shutil.move(str(model_file), target)
    else:
        shutil.copyfile(model_file, target)
    write_config(tmp, build_model_config(metadata, options, platform=platform, backend=backend))
    for filename, data in warmup_files(metadata, options).items():
        (tmp / WARMUP_DIRNAME).mkdir(exist_ok=True)
        (tmp / WARMUP_DIRNAME / filename).write_bytes(data)
    write_metadata(tmp, metadata)
    if isinstance(metadata, SegmentationMetadata) and metadata.segmentation.merge_graph:
        # The official merge as a graph, for backends that run it where the network runs.
        from model_export.onnx.merge import write_merge_graph

        write_merge_graph(tmp / VERSION / metadata.segmentation.merge_graph)
    if parity is not None:
        write_parity(tmp, parity)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return EntryPaths(
        entry_dir=final,
        model_file=final / VERSION / model_filename,
        config=final / CONFIG_FILENAME,
        metadata=final / METADATA_FILENAME,
        parity=(final / PARITY_FILENAME) if parity is not None else None,
    )

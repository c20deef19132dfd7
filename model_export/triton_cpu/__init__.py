"""The CPU twin of a model repository, for tests and development only (never for production).

The production repository (:mod:`model_export.repository`) uses ``platform: "onnxruntime_onnx"``
(or TensorRT plans), which only NVIDIA's containers provide. The ``tritonserver`` binary that the
tests install from PyPI (``scripts/install_triton.sh``) has just the python backend, so each entry
gets a twin in a *separate* repository directory: same name, inputs, outputs, ``max_batch_size``,
``dynamic_batching``, ``model_warmup`` and ``parameters`` (``hrnet_metadata`` included), but
``backend: "python"`` with a ``model.py`` (the template :mod:`model_export.triton_cpu.model`) that
runs the *same* ``model.onnx`` through ONNX Runtime. Clients cannot tell the two apart except by speed.

Every kind of entry works: one FP32 input and one output (segmentation, landmarks) as well as
detection's two inputs (FP32 ``image``, INT64 ``image_size``), three outputs and
``max_batch_size: 1``. Warm-up samples are kept, and their data files (``warmup/``, e.g.
detection's ``image_size``) copied, so Triton warms the twin up exactly as the original; pass
``warmup=False`` (CLI ``--no-warmup``) to drop them and load faster.

CLI (:mod:`model_export.triton_cpu.__main__`):
``python -m model_export.triton_cpu SRC_REPO_OR_ENTRY DST_REPO --pydeps DIR``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from service.contract import METADATA_FILENAME

from model_export.repository import (
    CONFIG_FILENAME, ONNX_FILENAME, PARITY_FILENAME, VERSION, WARMUP_DIRNAME, read_config,
    write_config,
)

#: The python-backend model copied to ``<repo>/<name>/1/model.py`` of every twin.
TEMPLATE = Path(__file__).with_name("model.py")
ONNX_RELPATH = Path(VERSION) / ONNX_FILENAME
PYTHON_RELPATH = Path(VERSION) / "model.py"

# Fields that only make sense for the production backends (or that we set ourselves).
_DROPPED_FIELDS = (
    "platform", "backend", "runtime", "default_model_filename", "cc_model_filenames",
    "optimization", "instance_group",
)


def cpu_config(
    config: mc.ModelConfig, onnx_model: Path, pydeps: Path, *, instances: int = 1, ort_threads: int = 1,
    warmup: bool = True,
) -> mc.ModelConfig:
    """The python-backend twin of ``config`` that runs ``onnx_model`` with ONNX Runtime on the CPU.

    ``ort_threads`` bounds ONNX Runtime's intra-op threads per instance (0: ORT's default), which
    keeps a test server from taking every core of a small CI machine. ``warmup=False`` drops the
    config's ``model_warmup`` samples.
    """
    out = mc.ModelConfig()
    out.CopyFrom(config)
    for field in _DROPPED_FIELDS:
        out.ClearField(field)
    if not warmup:
        out.ClearField("model_warmup")
    out.backend = "python"
    group = out.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = instances
    out.parameters["onnx_model"].string_value = str(onnx_model.resolve())
    out.parameters["pydeps"].string_value = str(pydeps.resolve())
    out.parameters["ort_intra_threads"].string_value = str(ort_threads)
    return out


def write_cpu_variant(
    src_entry: Path, dst_repo: Path, pydeps: Path, *, instances: int = 1, ort_threads: int = 1,
    warmup: bool = True,
) -> Path:
    """Write the CPU twin of repository entry ``src_entry`` into ``dst_repo``; return its directory.

    The twin references ``src_entry/1/model.onnx`` by absolute path (nothing is copied but the
    sidecars and the warm-up data files), so both repositories serve the very same graph.
    """
    src_entry = Path(src_entry)
    config_path = src_entry / CONFIG_FILENAME
    onnx_path = src_entry / ONNX_RELPATH
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} not found")
    config = read_config(config_path)
    if not config.name:
        config.name = src_entry.name
    twin = cpu_config(config, onnx_path, Path(pydeps), instances=instances, ort_threads=ort_threads,
                      warmup=warmup)

    dst = Path(dst_repo) / twin.name
    version_dir = dst / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    write_config(dst, twin)
    shutil.copyfile(TEMPLATE, version_dir / "model.py")
    for sidecar in (METADATA_FILENAME, PARITY_FILENAME):
        if (src_entry / sidecar).is_file():
            shutil.copyfile(src_entry / sidecar, dst / sidecar)
    _copy_warmup_files(twin, src_entry, dst)
    return dst


def _copy_warmup_files(config: mc.ModelConfig, src_entry: Path, dst: Path) -> None:
    """Copy the ``input_data_file`` of every warm-up input (Triton reads ``<model>/warmup/<file>``)."""
    for sample in config.model_warmup:
        for name, spec in sample.inputs.items():
            if spec.WhichOneof("input_data_type") != "input_data_file":
                continue
            src = src_entry / WARMUP_DIRNAME / spec.input_data_file
            if not src.is_file():
                raise FileNotFoundError(
                    f"{src} (warm-up data of input '{name}' of {config.name!r}) not found"
                )
            target = dst / WARMUP_DIRNAME / spec.input_data_file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)


def write_python_variant(src_entry: Path, dst_repo: Path, pydeps: Path) -> Path:
    """The twin of a python-backend entry (the served merge's ``__segment`` BLS model): the same
    config and ``model.py``, with ``pydeps`` so that the stub finds numpy."""
    src_entry = Path(src_entry)
    config = read_config(src_entry / CONFIG_FILENAME)
    config.name = config.name or src_entry.name
    config.parameters["pydeps"].string_value = str(Path(pydeps).resolve())
    dst = Path(dst_repo) / config.name
    (dst / VERSION).mkdir(parents=True, exist_ok=True)
    write_config(dst, config)
    shutil.copyfile(src_entry / PYTHON_RELPATH, dst / PYTHON_RELPATH)
    return dst


def write_cpu_repository(src: Path, dst_repo: Path, pydeps: Path, **kw: Any) -> list[Path]:
    """Write twins of every entry of repository ``src`` (or of the single entry ``src``): ONNX
    entries as python models running their graph, python entries as they are."""
    src = Path(src)
    entries = [src] if (src / CONFIG_FILENAME).is_file() else sorted(
        p for p in src.iterdir() if (p / CONFIG_FILENAME).is_file()
        and ((p / ONNX_RELPATH).is_file() or (p / PYTHON_RELPATH).is_file())
    )
    return [write_cpu_variant(entry, dst_repo, pydeps, **kw) if (entry / ONNX_RELPATH).is_file()
            else write_python_variant(entry, dst_repo, pydeps) for entry in entries]
